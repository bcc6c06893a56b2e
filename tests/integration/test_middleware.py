"""Middleware around every handler, hooks before every enqueue, and follow-up enqueues.

Worker side: ``Registry.add_middleware`` (outermost first; an exception fails the
attempt like the handler's; the success and error handlers see the shaped outcome).
Producer side: ``ClientConfig.before_enqueue``. ``JobContext.enqueue`` enqueues with the
client that runs the job.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import FAST_POOL, unique_name, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NO_RETRY = jobs.JobConfig(max_retries=0)


@pytest.fixture
def client_for(redis_url: str) -> Iterator[Callable[..., jobs.Client]]:
    """``make(registry=None, **ClientConfig fields)``: a client on a fresh queue, torn down."""
    made: list[jobs.Client] = []

    def make(registry: jobs.Registry | None = None, **config: Any) -> jobs.Client:
        pool = jobs.WorkerPoolConfig(**{**FAST_POOL, **config.pop("pool", {})})
        queue = jobs.RedisQueue.from_url(redis_url, name=unique_name())
        client = jobs.Client(
            jobs.ClientConfig(queue=queue, registry=registry, worker_pool_config=pool, **config)
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()
        client.queue.close()


def test_middleware_runs_around_the_handler_outermost_first(
    client_for: Callable[..., jobs.Client],
) -> None:
    calls: list[str] = []

    def outer(ctx: jobs.JobContext, call_next: Callable[[], Any]) -> Any:
        calls.append(f"outer before {ctx.job.type}")
        result = call_next()
        calls.append("outer after")
        return {"outer": result}

    registry = jobs.Registry(middleware=[outer])

    @registry.add_middleware
    def inner(ctx: jobs.JobContext, call_next: Callable[[], Any]) -> Any:
        calls.append("inner before")
        result = call_next()
        calls.append("inner after")
        return {"inner": result}

    @registry.job("work")
    def work(ctx: jobs.JobContext, payload: int) -> int:
        calls.append("handler")
        return payload * 2

    assert registry.middleware == (outer, inner)
    first = registry.add_middleware(lambda ctx, call_next: call_next(), outermost=True)
    assert list(registry.middleware) == [first, outer, inner]
    client = client_for(registry)
    job_id = client.enqueue("work", 21)
    with client:
        job = client.wait(job_id, timeout=10)
    assert job.status is jobs.JobStatus.COMPLETED
    assert job.result == {"outer": {"inner": 42}}
    assert calls == ["outer before work", "inner before", "handler", "inner after", "outer after"]


def test_a_middleware_that_raises_fails_the_attempt_like_a_handler(
    client_for: Callable[..., jobs.Client],
) -> None:
    ran: list[str] = []
    errors: list[tuple[jobs.Job, BaseException]] = []
    successes: list[jobs.Job] = []

    def guard(ctx: jobs.JobContext, call_next: Callable[[], Any]) -> Any:
        if ctx.job.payload == "refuse":
            raise RuntimeError("refused by middleware")
        if ctx.job.payload == "forbid":
            raise jobs.PermanentError("forbidden by middleware")
        return call_next()

    registry = jobs.Registry(middleware=[guard])

    def work(ctx: jobs.JobContext, payload: str) -> str:
        ran.append(payload)
        return payload

    registry.register_func("work", work)
    client = client_for(
        registry,
        pool={
            "error_handler": lambda job, exc: errors.append((job, exc)),
            "success_handler": successes.append,
        },
    )
    retried = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    refused = client.enqueue("work", "refuse", retried)
    forbidden = client.enqueue("work", "forbid", retried)
    fine = client.enqueue("work", "fine", retried)
    with client:
        done = {job.id: job for job in client.wait_all([refused, forbidden, fine], timeout=10)}
        wait_until(lambda: len(errors) == 3 and len(successes) == 1, timeout=10)
    assert ran == ["fine"]
    # Retried by policy (2 attempts), exactly as a handler's RuntimeError.
    assert done[refused].status is jobs.JobStatus.FAILED
    assert done[refused].attempts == 2
    assert done[refused].error == "RuntimeError: refused by middleware"
    assert "refused by middleware" in (done[refused].traceback or "")
    # PermanentError from a middleware: failed at once.
    assert done[forbidden].status is jobs.JobStatus.FAILED
    assert done[forbidden].attempts == 1
    assert done[fine].result == "fine"
    # The hooks see every attempt, with the middleware's exception.
    assert sorted((job.id, str(exc)) for job, exc in errors) == sorted(
        [
            (refused, "refused by middleware"),
            (refused, "refused by middleware"),
            (forbidden, "forbidden by middleware"),
        ]
    )
    assert [job.id for job in successes] == [fine]


def test_a_middleware_can_skip_the_handler(client_for: Callable[..., jobs.Client]) -> None:
    registry = jobs.Registry(middleware=[lambda ctx, call_next: "short-circuited"])
    registry.register_func("work", lambda ctx, payload: pytest.fail("the handler ran"))
    client = client_for(registry)
    job_id = client.enqueue("work")
    with client:
        assert client.result(job_id, timeout=10) == "short-circuited"


def test_before_enqueue_hooks_add_metadata_that_middleware_sees(
    client_for: Callable[..., jobs.Client],
) -> None:
    local = threading.local()
    local.request_id = "req-1"

    def add_request_id(job_type: str, config: jobs.JobConfig) -> jobs.JobConfig:
        return attrs.evolve(config, metadata={**config.metadata, "request_id": local.request_id})

    def count(job_type: str, config: jobs.JobConfig) -> None:
        counted.append(job_type)  # None: the config stays as it is

    counted: list[str] = []
    seen: list[str] = []

    def log_request(ctx: jobs.JobContext, call_next: Callable[[], Any]) -> Any:
        seen.append(ctx.job.metadata["request_id"])
        return call_next()

    registry = jobs.Registry(middleware=[log_request])
    registry.register_func("work", lambda ctx, payload: payload)
    client = client_for(registry, before_enqueue=[add_request_id, count])
    first = client.enqueue("work", 1, jobs.JobConfig(metadata={"user": 7}, priority=5))
    local.request_id = "req-2"
    batch = client.enqueue_many("work", [2, 3])
    assert counted == ["work", "work"]  # once per call
    stored = client.get(first)
    assert stored.metadata == {"user": 7, "request_id": "req-1"}
    assert stored.priority == 5
    assert [client.get(job_id).metadata for job_id in batch] == [{"request_id": "req-2"}] * 2
    with client:
        client.wait_all([first, *batch], timeout=10)
    assert sorted(seen) == ["req-1", "req-2", "req-2"]


def test_a_before_enqueue_hook_that_raises_writes_nothing(
    client_for: Callable[..., jobs.Client],
) -> None:
    def refuse(job_type: str, config: jobs.JobConfig) -> jobs.JobConfig:
        raise LookupError("no request in flight")

    client = client_for(before_enqueue=refuse)
    with pytest.raises(LookupError, match="no request in flight"):
        client.enqueue("work", 1)
    assert client.stats().total_jobs == 0

    wrong = client_for(before_enqueue=[lambda job_type, config: {"priority": 1}])
    with pytest.raises(jobs.ConfigError, match="not a JobConfig"):
        wrong.enqueue("work", 1)
    assert wrong.stats().total_jobs == 0


def test_bad_middleware_and_hooks_are_refused_at_once(redis_url: str) -> None:
    with pytest.raises(jobs.ConfigError, match="middleware must be callable"):
        jobs.Registry(middleware=["not callable"])  # type: ignore[list-item]
    queue = jobs.RedisQueue.from_url(redis_url, name=unique_name())
    try:
        with pytest.raises(jobs.ConfigError, match="before_enqueue"):
            jobs.ClientConfig(queue=queue, before_enqueue=[42])
    finally:
        queue.close()


def test_a_handler_enqueues_follow_up_jobs_with_its_client(
    client_for: Callable[..., jobs.Client],
) -> None:
    registry = jobs.Registry()

    @registry.job("order")
    def order(ctx: jobs.JobContext, payload: dict[str, Any]) -> str:
        return ctx.enqueue("ship", {"order": payload["id"]}, NO_RETRY)

    registry.register_func("ship", lambda ctx, payload: f"shipped {payload['order']}")
    tagged: list[str] = []
    client = client_for(registry, before_enqueue=lambda job_type, config: tagged.append(job_type))
    job_id = client.enqueue("order", {"id": 9})
    with client:
        follow_up = client.result(job_id, timeout=10)
        assert client.result(follow_up, timeout=10) == "shipped 9"
    assert tagged == ["order", "ship"]
    assert client.get(follow_up).status is jobs.JobStatus.COMPLETED
    wait_for_status(client, follow_up, jobs.JobStatus.COMPLETED)


def test_a_bare_context_has_no_client_to_enqueue_with() -> None:
    job = jobs.Job(id="x", type="t", payload=None, status=jobs.JobStatus.PROCESSING)
    ctx = jobs.JobContext(job, jobs.CancellationToken(), logging.getLogger("t"))
    assert ctx.client is None
    with pytest.raises(jobs.ConfigError, match="no client"):
        ctx.enqueue("t")
