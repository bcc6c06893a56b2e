"""Job types declared once: @registry.job("resize", timeout=60, max_retries=5, ...).

The declared settings apply wherever the enqueue left a setting at the library default:
from a client with the registry (applied in Python), and from any producer once a
worker pool with it has started (it publishes them; enqueue.lua applies them).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import jobs
from jobs import _codec
from tests.helpers import wait_until
from tests.integration._clients import make_client

if TYPE_CHECKING:
    import redis


def _declared() -> jobs.Registry:
    registry = jobs.Registry()

    @registry.job(
        "resize",
        timeout=60,
        max_retries=5,
        priority=7,
        retry_backoff=jobs.LinearBackoff(step=2),
    )
    def resize(ctx: jobs.JobContext, payload: Any) -> Any:
        return payload

    registry.register_func("plain", lambda ctx, payload: payload)
    return registry


def _record(redis_client: redis.Redis, client: jobs.Client, job_id: str) -> dict[str, str]:
    raw = redis_client.hgetall(client.queue.keys.job(job_id))
    return {_codec.text(k): _codec.text(v) for k, v in raw.items()}


def test_a_client_with_the_registry_applies_the_declared_settings(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with make_client(redis_url, _declared(), start=False) as client:
        job = client.get(client.enqueue("resize", {}))
        assert (job.timeout, job.max_retries, job.priority) == (timedelta(seconds=60), 5, 7)
        assert json.loads(_record(redis_client, client, job.id)["backoff"])["step"] == 2
        # An explicit field wins, even one equal to the library default.
        explicit = jobs.JobConfig(max_retries=3, timeout=None, priority=0)
        job = client.get(client.enqueue("resize", {}, explicit))
        assert (job.timeout, job.max_retries, job.priority) == (None, 3, 0)
        # Other fields still come from the declaration.
        assert json.loads(_record(redis_client, client, job.id)["backoff"])["step"] == 2
        # A type without declarations keeps the library defaults.
        plain = client.get(client.enqueue("plain", {}))
        assert (plain.timeout, plain.max_retries, plain.priority) == (
            timedelta(minutes=30),
            3,
            0,
        )


def test_a_producer_without_the_registry_gets_them_once_a_pool_declared_them(
    redis_url: str,
) -> None:
    with make_client(redis_url, start=False) as producer:
        before = producer.get(producer.enqueue("resize", {}))
        assert before.max_retries == 3  # nobody declared anything yet
        worker = jobs.Client(
            jobs.ClientConfig(
                queue=producer.queue,
                registry=_declared(),
                worker_pool_config=jobs.WorkerPoolConfig(num_workers=1, lease=1),
            )
        )
        with worker:
            wait_until(lambda: producer.queue.client.hexists(producer.queue.keys.types, "resize"))
            job = producer.get(producer.enqueue("resize", {}))
            assert (job.timeout, job.max_retries, job.priority) == (timedelta(seconds=60), 5, 7)
            job = producer.get(producer.enqueue("resize", {}, jobs.JobConfig(max_retries=1)))
            assert (job.max_retries, job.priority) == (1, 7)
            assert worker.wait(job.id, timeout=10).status is jobs.JobStatus.COMPLETED


def test_strict_clients_refuse_unknown_types(redis_url: str) -> None:
    with make_client(redis_url, _declared(), start=False) as client:
        strict = jobs.Client(
            jobs.ClientConfig(queue=client.queue, registry=_declared(), strict_types=True)
        )
        with pytest.raises(jobs.UnknownJobType, match="resise"):
            strict.enqueue("resise", {})
        assert strict.enqueue("resize", {})
        # Without a registry: what the queue's worker pools declared.
        blind = jobs.Client(jobs.ClientConfig(queue=client.queue, strict_types=True))
        with pytest.raises(jobs.UnknownJobType, match="no worker pool declared"):
            blind.enqueue("resize", {})
        client.queue.declare_types(_declared().declarations())
        assert blind.enqueue("resize", {})
        with pytest.raises(jobs.UnknownJobType):
            blind.enqueue_many("resise", [1, 2])
        assert client.stats().total_jobs == 2


def test_bad_declarations_are_config_errors() -> None:
    registry = jobs.Registry()
    with pytest.raises(jobs.ConfigError, match="max_retries"):
        registry.register_func("t", lambda ctx, p: p, max_retries=-1)
    with pytest.raises(jobs.ConfigError, match="timeout"):
        registry.job("t", timeout=0)(lambda ctx, p: p)
    with pytest.raises(jobs.ConfigError, match="priority"):
        registry.register("t", lambda ctx, p: p, priority=5000)
    assert "t" not in registry


@attrs.frozen
class Resize:
    path: str
    width: int


@attrs.frozen
class Resized:
    path: str
    width: int


def test_a_job_type_object_types_the_payload_and_rebuilds_the_result(redis_url: str) -> None:
    registry = jobs.Registry()

    @registry.job_type("resize", max_retries=5)
    def resize(ctx: jobs.JobContext, payload: Resize) -> Resized:
        return Resized(path=payload.path.upper(), width=payload.width // 2)

    assert isinstance(resize, jobs.JobType) and resize.name == "resize"
    assert registry.get("resize") is not None
    with make_client(redis_url, registry) as client:
        handle = client.enqueue(resize, Resize("a.png", 640))
        assert isinstance(handle, jobs.TypedJobHandle) and isinstance(handle, str)
        assert handle.result(timeout=10) == Resized("A.PNG", 320)  # an instance, not a dict
        assert client.get(handle).max_retries == 5
        # The name still works, untyped; and the handler is still a plain callable.
        assert client.enqueue("resize", {"path": "b", "width": 2}).result(timeout=10) == {
            "path": "B",
            "width": 1,
        }
        ctx = jobs.JobContext(client.get(handle), jobs.CancellationToken(), logging.getLogger())
        assert resize(ctx, Resize("c", 4)) == Resized("C", 2)
