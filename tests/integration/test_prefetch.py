"""Prefetch: jobs fetched ahead of the free threads (``WorkerPoolConfig(prefetch=...)``).

A prefetched job waits in the pool for a thread. What must still hold: every prefetched
job runs; an outcome is recorded as soon as its handler returns (or its timeout passes),
not when the jobs still running end; stop() returns prefetched jobs to the queue at once;
and a job cancelled while it waited for a thread never starts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jobs
from jobs.worker._core import BUFFER_WAIT, CONFIRM_AFTER, PREFETCH_PER_THREAD
from tests.helpers import wait_until
from tests.integration._clients import Gate, make_client, recorder, wait_for_status

#: Long enough for an outcome to be written many times over, far shorter than the
#: blocked jobs beside it (they run until the test opens their gate).
PROMPTLY = 5.0


def registry_with(**handlers: Any) -> jobs.Registry:
    registry = jobs.Registry()
    for job_type, handler in handlers.items():
        registry.register_func(job_type, handler)
    return registry


def test_prefetched_jobs_all_run(redis_url: str) -> None:
    seen, handler = recorder()
    registry = registry_with(t=handler)
    with make_client(redis_url, registry, start=False, num_workers=2, prefetch=4) as client:
        ids = client.enqueue_many("t", list(range(50)))
        client.start()
        for job_id in ids:
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        stats = client.stats()
    assert sorted(seen) == list(range(50))
    assert (stats.completed_jobs, stats.processing_jobs, stats.pending_jobs) == (50, 0, 0)


def test_short_job_is_recorded_while_long_jobs_run(redis_url: str) -> None:
    # 2 threads, 2 prefetched: the short job and a long one start, two long ones wait.
    # The short job's outcome wakes no fetch (the pool is still full enough), and must
    # not wait for the fetcher's next fetch, i.e. for a long job to end.
    gate = Gate()
    registry = registry_with(long=gate, short=lambda ctx, payload: "s")
    # The gate opens first on the way out: stop() then has no long job to wait for.
    with make_client(redis_url, registry, start=False, num_workers=2, prefetch=2) as client, gate:
        short = client.enqueue("short", None, jobs.JobConfig(priority=10))
        client.enqueue_many("long", [1, 2, 3])
        client.start()
        wait_for_status(client, short, jobs.JobStatus.COMPLETED, timeout=PROMPTLY)
        assert not gate.returned.is_set()
        assert client.stats().processing_jobs == 3


def test_timeout_is_recorded_while_long_jobs_run(redis_url: str) -> None:
    # The same for an attempt the watchdog times out: recorded at its timeout.
    gate = Gate()
    registry = registry_with(long=gate, hangs=gate)
    with make_client(redis_url, registry, start=False, num_workers=2, prefetch=2) as client, gate:
        hangs = client.enqueue(
            "hangs", None, jobs.JobConfig(priority=10, timeout=0.3, max_retries=0)
        )
        client.enqueue_many("long", [1, 2, 3])
        client.start()
        failed = wait_for_status(client, hangs, jobs.JobStatus.FAILED, timeout=PROMPTLY)
        assert failed.error is not None and "JobTimeout" in failed.error
        assert not gate.returned.is_set()


def test_stop_returns_prefetched_jobs_at_once(redis_url: str) -> None:
    with Gate(result="first") as gate:
        registry = registry_with(t=gate)
        with make_client(
            redis_url, registry, start=False, num_workers=1, prefetch=2, shutdown_timeout=20
        ) as client:
            ids = client.enqueue_many("t", [1, 2, 3])
            client.start()
            assert gate.entered.wait(5)
            wait_until(lambda: client.stats().processing_jobs == 3, timeout=5)
            stopper = threading.Thread(target=client.stop, name="test-stopper")
            stopper.start()
            try:
                # While stop() waits for the running job, the prefetched ones are back.
                wait_until(lambda: client.stats().pending_jobs == 2, timeout=5)
                others = [client.get(i) for i in ids[1:]]
                assert [(j.status, j.attempts) for j in others] == [(jobs.JobStatus.PENDING, 0)] * 2
                assert stopper.is_alive()
            finally:
                gate.release.set()
                stopper.join(10)
            assert not stopper.is_alive()
            assert client.get(ids[0]).status is jobs.JobStatus.COMPLETED
    assert gate.job_ids == [ids[0]]


def test_job_cancelled_while_prefetched_never_starts(redis_url: str) -> None:
    with Gate(result="first") as gate:
        registry = registry_with(t=gate)
        with make_client(
            redis_url, registry, start=False, num_workers=1, prefetch=1, lease=3
        ) as client:
            first, waiting = client.enqueue_many("t", [1, 2])
            client.start()
            assert gate.entered.wait(5)
            wait_until(lambda: client.stats().processing_jobs == 2, timeout=5)
            assert client.cancel(waiting)
            # The job waits for the thread a little longer than a job a free thread
            # takes at once: the pool checks its lease before starting it, rather than
            # learning of the cancellation at its next heartbeat, after the handler began.
            time.sleep(2 * CONFIRM_AFTER)
            gate.release.set()
            wait_for_status(client, first, jobs.JobStatus.COMPLETED)
            # Anything more the pool fetches runs after the cancelled job would have.
            after = client.enqueue("t", 3)
            wait_for_status(client, after, jobs.JobStatus.COMPLETED)
            assert client.get(waiting).status is jobs.JobStatus.CANCELLED
    assert waiting not in gate.job_ids
    assert gate.job_ids == [first, after]


def test_a_better_job_enqueued_later_runs_before_buffered_ones(redis_url: str) -> None:
    # 1 thread, 3 buffered: "first" runs, low1..low3 wait in the pool. A job of higher
    # priority enqueued then must run before them, as it would without the buffer.
    order: list[str] = []
    release = threading.Event()

    def handler(ctx: jobs.JobContext, payload: str) -> str:
        order.append(payload)
        if payload == "first":
            release.wait(30)
        return payload

    registry = registry_with(t=handler)
    try:
        with make_client(redis_url, registry, start=False, num_workers=1, prefetch=3) as client:
            client.enqueue("t", "first", jobs.JobConfig(priority=5))
            lows = client.enqueue_many("t", ["low1", "low2", "low3"])
            client.start()
            for job_id in lows:
                wait_for_status(client, job_id, jobs.JobStatus.PROCESSING)
            assert order == ["first"]
            high = client.enqueue("t", "high", jobs.JobConfig(priority=3))
            # The pool hands back what "high" outranks and takes "high" into its buffer.
            wait_for_status(client, high, jobs.JobStatus.PROCESSING, timeout=PROMPTLY)
            release.set()
            for job_id in [high, *lows]:
                wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
            # Handing back did not count an attempt.
            assert [client.get(job_id).attempts for job_id in lows] == [1, 1, 1]
    finally:
        release.set()
    assert order == ["first", "high", "low1", "low2", "low3"]


def test_by_default_only_short_jobs_are_fetched_ahead(redis_url: str) -> None:
    # prefetch=None: the pool buffers jobs while they are short on average (and the queue
    # has a backlog), not after.
    slow = threading.Event()

    def handler(ctx: jobs.JobContext, payload: str) -> str:
        if payload == "slow":
            slow.wait(0.5)
        return payload

    registry = registry_with(t=handler)
    with make_client(redis_url, registry, num_workers=2, prefetch=None) as client:
        pool: Any = client._pool
        assert pool._prefetch() == 0  # nothing measured yet
        for job_id in client.enqueue_many("t", ["quick"] * 20):
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert pool._prefetch() == 0  # the queue has no backlog
        pool._backlog = True
        # Per thread, as many as the threads run in BUFFER_WAIT at the measured pace.
        in_time = int(BUFFER_WAIT * 2 / max(pool._mean_duration, 1e-9))
        assert pool._prefetch() == min(PREFETCH_PER_THREAD * 2, in_time) > 0
        for job_id in client.enqueue_many("t", ["slow"] * 2):
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert pool._prefetch() == 0
