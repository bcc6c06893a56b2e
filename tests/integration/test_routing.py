"""A job type declared on its own queue (`Registry.register`'s ``queue``).

Its jobs go to that queue from a client with the registry, and from a producer without
it once a worker pool has published the declaration; a pool with the registry serves
that queue along with its own; `jobs.testing.drain` runs them too.
"""

from __future__ import annotations

from typing import Any

import pytest

import jobs
import jobs.testing
from jobs.worker._pool import served_names
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name


def _registry(queue: str) -> jobs.Registry:
    registry = jobs.Registry()

    @registry.job("resize", queue=queue, max_retries=5)
    def resize(ctx: jobs.JobContext, payload: Any) -> str:
        return f"{ctx.job.queue}:{payload}"

    @registry.job("note")
    def note(ctx: jobs.JobContext, payload: Any) -> str:
        return ctx.job.queue

    return registry


def test_a_client_with_the_registry_sends_the_type_to_its_queue(redis_url: str) -> None:
    images = unique_name()
    with make_client(redis_url, _registry(images)) as client:
        handle = client.enqueue("resize", "a.png")
        # The handle knows where its job is; the client's own queue does not hold it.
        assert handle.result(timeout=10) == f"{images}:a.png"
        assert handle.get().max_retries == 5
        with pytest.raises(jobs.JobNotFound):
            client.get(handle.id)
        assert client.enqueue("note", None).result(timeout=10) == client.queue.name
        # Served by the client's own pool, along with its queue, without configuration.
        assert {w.id for w in handle.client.workers()} == {w.id for w in client.workers()}


def test_a_producer_without_the_registry_follows_the_published_declaration(
    redis_url: str,
) -> None:
    images = unique_name()
    with make_client(redis_url, start=False) as producer:
        worker = jobs.Client(
            jobs.ClientConfig(
                queue=producer.queue,
                registry=_registry(images),
                worker_pool_config=jobs.WorkerPoolConfig(num_workers=2, lease=1),
            )
        )
        with worker:
            r, keys = producer.queue.client, producer.queue.keys
            wait_until(lambda: r.hexists(keys.types, "resize"))
            handle = producer.enqueue("resize", "b.png")
            assert handle.client.queue.name == images
            assert handle.wait(timeout=10).result == f"{images}:b.png"
            # An undeclared type stays on the producer's queue.
            assert producer.enqueue("note", None).wait(timeout=10).queue == producer.queue.name


def test_a_flow_refuses_a_type_declared_on_another_queue(redis_url: str) -> None:
    with make_client(redis_url, _registry(unique_name()), start=False) as client:
        with pytest.raises(jobs.ConfigError, match="'resize' is declared on queue"):
            client.enqueue_flow(jobs.chain(jobs.Task("note"), jobs.Task("resize", "x")))
        assert client.stats().total_jobs == 0


def test_a_pool_told_which_queues_to_serve_serves_only_those(redis_url: str) -> None:
    images = unique_name()
    with (
        make_client(redis_url, _registry(images), start=False) as producer,
        make_client(
            redis_url, _registry(images), name=producer.queue.name, queues=[producer.queue.name]
        ) as worker,
    ):
        handle = producer.enqueue("resize", "c.png")
        assert worker.enqueue("note", None).wait(timeout=10).status is jobs.JobStatus.COMPLETED
        wait_until(lambda: len(worker.workers()) == 1)  # its first beat is in
        assert handle.client.workers() == []  # nobody serves the declared queue
        assert handle.get().status is jobs.JobStatus.PENDING


def test_drain_runs_jobs_on_declared_queues(redis_url: str) -> None:
    images = unique_name()
    with make_client(redis_url, _registry(images), start=False) as client:
        client.enqueue("resize", "d.png", jobs.JobConfig(delay=30))
        client.enqueue("note", None)
        ran = jobs.testing.drain(client)
        assert sorted((job.type, job.queue) for job in ran) == [
            ("note", client.queue.name),
            ("resize", images),
        ]


def test_a_declared_queue_must_be_a_valid_name() -> None:
    registry = jobs.Registry()
    with pytest.raises(jobs.ConfigError, match="queue must not contain"):
        registry.register("t", lambda ctx, payload: None, queue="a:b")
    with pytest.raises(jobs.ConfigError, match="queue"):
        registry.register("t", lambda ctx, payload: None, queue="")


def test_which_queues_a_pool_serves() -> None:
    registry = _registry("images")
    default = jobs.WorkerPoolConfig()
    assert served_names("default", default, registry) == [("default", 1), ("images", 1)]
    assert served_names("images", default, registry) == [("images", 0)]
    assert served_names("default", default, jobs.Registry()) == [("default", 0)]
    told = jobs.WorkerPoolConfig(queues=["a", "b"])
    assert served_names("default", told, registry) == [("a", 0), ("b", 0)]
