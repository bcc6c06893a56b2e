"""One worker pool serving several queues: strict order, weights, and everything per queue."""

from __future__ import annotations

import collections
import threading
from typing import Any

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name, wait_for_status


def _producer(redis_url: str, name: str) -> jobs.Client:
    return jobs.Client(jobs.ClientConfig(queue=jobs.RedisQueue.from_url(redis_url, name=name)))


def test_strict_order_runs_an_earlier_queue_first(redis_url: str) -> None:
    critical, bulk = unique_name("critical"), unique_name("bulk")
    order: list[str] = []
    registry = jobs.Registry()
    registry.register_func("record", lambda ctx, payload: order.append(ctx.job.queue))
    producers = {name: _producer(redis_url, name) for name in (critical, bulk)}
    try:
        bulk_ids = producers[bulk].enqueue_many("record", [None] * 5)
        critical_ids = producers[critical].enqueue_many("record", [None] * 5)
        with make_client(
            redis_url, registry, name=critical, num_workers=1, queues=[critical, bulk]
        ) as client:
            for job_id in critical_ids:
                wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
            for job_id in bulk_ids:
                wait_for_status(producers[bulk], job_id, jobs.JobStatus.COMPLETED)
    finally:
        for producer in producers.values():
            producer.queue.close()
    # Enqueued second, the critical jobs all ran first.
    assert order == [critical] * 5 + [bulk] * 5


def test_weights_share_the_pool_in_proportion(redis_url: str) -> None:
    heavy, light = unique_name("heavy"), unique_name("light")
    seen: collections.Counter[str] = collections.Counter()
    first_hundred = threading.Event()

    def record(ctx: jobs.JobContext, payload: Any) -> None:
        seen[ctx.job.queue] += 1
        if sum(seen.values()) >= 100:
            first_hundred.set()
            ctx.sleep(30)  # hold the slot: the count stops at the first hundred

    registry = jobs.Registry()
    registry.register_func("record", record)
    producers = {name: _producer(redis_url, name) for name in (heavy, light)}
    try:
        for producer in producers.values():
            producer.enqueue_many("record", [None] * 200)
        with make_client(
            redis_url,
            registry,
            name=heavy,
            num_workers=1,
            shutdown_timeout=0,
            queues={heavy: 3, light: 1},
            # One job per fetch, so the hundred counted are a hundred weighted draws, the
            # spread the bounds below are for. (A prefetching pool takes several jobs of
            # one queue per fetch: 3:1 all the same, but in coarser steps; with 4 per
            # thread, five a fetch here, the bounds were two standard deviations wide.)
            prefetch=0,
        ):
            assert first_hundred.wait(20)
            counts = dict(seen)
    finally:
        for producer in producers.values():
            producer.queue.close()
    # 3:1 in expectation (75 of 100); both are served, the heavy one about three times
    # as often. The bounds are over four standard deviations wide (fails once in 10^5).
    assert 55 <= counts.get(heavy, 0) <= 95, counts
    assert counts.get(light, 0) >= 5, counts


def test_the_clients_own_queue_need_not_be_served(redis_url: str) -> None:
    other = unique_name("other")
    registry = jobs.Registry()
    registry.register_func("echo", lambda ctx, payload: payload)
    producer = _producer(redis_url, other)
    try:
        job_id = producer.enqueue("echo", 7)
        with make_client(redis_url, registry, queues=[other]) as client:
            own = client.enqueue("echo", 8)
            assert wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED).result == 7
            assert client.get(own).status is jobs.JobStatus.PENDING
            # The pool reports itself on the queues it serves (its heartbeat thread's
            # first beat, which may come after the job ran).
            wait_until(
                lambda: [w.num_workers for w in producer.workers()] == [2],
                timeout=10,
                message="the pool never reported itself on the queue it serves",
            )
            assert client.workers() == []
    finally:
        producer.queue.close()


def test_cancel_timeouts_and_shutdown_work_per_queue(redis_url: str) -> None:
    first, second = unique_name("first"), unique_name("second")
    started = threading.Event()

    def block(ctx: jobs.JobContext, payload: Any) -> str:
        started.set()
        while not ctx.cancelled:
            ctx.sleep(0.02)
        return "late"

    registry = jobs.Registry()
    registry.register_func("block", block)
    registry.register_func("echo", lambda ctx, payload: payload)
    producer = _producer(redis_url, second)
    try:
        with make_client(redis_url, registry, name=first, queues=[first, second]) as client:
            blocked = producer.enqueue("block", None)
            assert started.wait(5)
            assert producer.cancel(blocked)
            timed = producer.enqueue("block", None, jobs.JobConfig(timeout=0.2, max_retries=0))
            job = wait_for_status(producer, timed, jobs.JobStatus.FAILED)
            assert job.error is not None and job.error.startswith("JobTimeout")
            echoed = client.enqueue("echo", 1)
            assert wait_for_status(client, echoed, jobs.JobStatus.COMPLETED).result == 1
        assert producer.get(blocked).status is jobs.JobStatus.CANCELLED
        wait_until(lambda: producer.stats().processing_jobs == 0, timeout=5)
    finally:
        producer.queue.close()


@pytest.mark.parametrize(
    "queues",
    ["one", ["a", "a"], {"a": 0}, {"a": 1.5}, ["bad name"], 3],
    ids=["a-string", "duplicate", "zero-weight", "float-weight", "bad-name", "int"],
)
def test_bad_queue_lists_are_refused(queues: Any) -> None:
    with pytest.raises(jobs.ConfigError, match="queues"):
        jobs.WorkerPoolConfig(queues=queues)
