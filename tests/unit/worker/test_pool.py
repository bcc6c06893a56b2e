"""The worker runtime on `jobs.testing.MemoryQueue`: no server, a clock moved by hand.

Each test starts a real pool (its threads, its outbox, heartbeat and watchdog) on a
memory queue whose clock is a `ManualClock`: leases expire and retries come due when a
test says so, not after a wait. What the pool itself times in real time (a job's
timeout, the heartbeat's pace) is set short.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from jobs.testing import ManualClock, MemoryQueue, drain
from jobs.worker._core import (
    BUFFER_WAIT,
    CONFIRM_AFTER,
    PREFETCH_MOST,
    PREFETCH_PER_THREAD,
)
from jobs.worker._pool import WorkerPool
from tests.helpers import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(10)


class Rig:
    """A client and its pool on a memory queue, with the handlers' events at hand."""

    def __init__(self, **pool: Any) -> None:
        self.clock = ManualClock()
        self.queue = MemoryQueue(clock=self.clock)
        self.registry = jobs.Registry()
        self.release = threading.Event()  # blocking handlers return once it is set
        self.entered = threading.Semaphore(0)  # one release per handler that started
        self.seen: list[tuple[int, jobs.CancelReason | None]] = []  # attempt, why it stopped
        self.succeeded: list[jobs.Job] = []
        self.errors: list[tuple[jobs.Job, BaseException]] = []
        self.registry.register_func("echo", lambda ctx, payload: payload)
        self.registry.register_func("block", self._block)
        self.registry.register_func("fail_once", _fail_once)
        settings: dict[str, Any] = {
            "num_workers": 2,
            "lease": 30,
            "poll_interval": 5,
            "shutdown_timeout": 5,
            "success_handler": self.succeeded.append,
            "error_handler": lambda job, exc: self.errors.append((job, exc)),
        }
        settings.update(pool)
        self.client = jobs.Client(
            jobs.ClientConfig(
                queue=self.queue,
                registry=self.registry,
                worker_pool_config=jobs.WorkerPoolConfig(**settings),
            )
        )

    def _block(self, ctx: jobs.JobContext, payload: Any) -> Any:
        self.entered.release()
        while not self.release.is_set() and not ctx.cancelled:
            self.release.wait(0.005)
        self.seen.append((ctx.job.attempts, ctx.cancel_reason))
        return payload

    def started(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=5), "a blocking handler never started"

    def status(self, job_id: str) -> jobs.JobStatus:
        return self.client.get(job_id).status


def _fail_once(ctx: jobs.JobContext, payload: Any) -> Any:
    if ctx.job.attempts == 1:
        raise ValueError("first attempt fails")
    return payload


@contextlib.contextmanager
def running(**pool: Any) -> Iterator[Rig]:
    """A started `Rig` (``pool``: `WorkerPoolConfig` fields), stopped at the end."""
    made = Rig(**pool)
    made.client.start()
    try:
        yield made
    finally:
        made.release.set()
        made.client.stop(timeout=1)


@pytest.fixture
def rig() -> Iterator[Rig]:
    with running() as made:
        yield made


def test_a_job_runs_and_its_result_and_success_hook_are_recorded(rig: Rig) -> None:
    job_id = rig.client.enqueue("echo", {"n": 1})
    assert rig.client.result(job_id, timeout=5) == {"n": 1}
    wait_until(lambda: rig.succeeded, timeout=5)
    assert rig.succeeded[0].id == job_id
    assert rig.succeeded[0].status is jobs.JobStatus.COMPLETED
    assert rig.queue.stats().completed_jobs == 1


def test_a_failed_attempt_is_retried_when_its_backoff_has_passed(rig: Rig) -> None:
    config = jobs.JobConfig(retry_backoff=jobs.ExplicitBackoff([60]))
    job_id = rig.client.enqueue("fail_once", 7, config)
    wait_until(lambda: rig.status(job_id) is jobs.JobStatus.SCHEDULED, timeout=5)
    wait_until(lambda: rig.errors, timeout=5)
    job, exc = rig.errors[0]
    assert (job.status, job.attempts, type(exc)) == (jobs.JobStatus.SCHEDULED, 1, ValueError)
    rig.queue.advance(60)  # the backoff passes by the queue's clock; the pool is woken
    assert rig.client.result(job_id, timeout=5) == 7
    assert rig.client.get(job_id).attempts == 2


def test_a_job_past_its_timeout_is_cancelled_and_failed(rig: Rig) -> None:
    config = jobs.JobConfig(timeout=0.05, max_retries=0)
    job_id = rig.client.enqueue("block", None, config)
    job = rig.client.wait(job_id, timeout=5)
    assert job.status is jobs.JobStatus.FAILED
    assert job.error is not None and "JobTimeout" in job.error
    wait_until(lambda: rig.seen, timeout=5)
    assert rig.seen == [(1, jobs.CancelReason.TIMEOUT)]


def test_a_lost_lease_stops_the_handler_and_the_job_is_delivered_again() -> None:
    # One slot and no prefetch: the pool cannot fetch the job again before it notices.
    with running(lease=0.3, num_workers=1, prefetch=0) as rig:
        _lose_a_lease(rig)


def _lose_a_lease(rig: Rig) -> None:
    job_id = rig.client.enqueue("block", None)
    rig.started()
    # The pool stalls past its lease (by the queue's clock) and a reaper takes it back.
    assert rig.queue.advance(5) == (1, 0)
    wait_until(lambda: rig.seen, timeout=5)
    assert rig.seen[0] == (1, jobs.CancelReason.LEASE_LOST)
    rig.started()  # delivered again, to this same pool
    rig.release.set()
    assert rig.client.wait(job_id, timeout=5).status is jobs.JobStatus.COMPLETED
    assert rig.seen[-1] == (2, None)
    assert rig.queue.stats().lost_leases == 1


def test_a_cancelled_running_job_has_its_handler_told() -> None:
    # A short lease: the busy heartbeat (lease/3) brings the cancellation sooner.
    with running(lease=0.3) as rig:
        _cancel_a_running_job(rig)


def _cancel_a_running_job(rig: Rig) -> None:
    job_id = rig.client.enqueue("block", None)
    rig.started()
    assert rig.client.cancel(job_id) is True
    wait_until(lambda: rig.seen, timeout=5)  # the next heartbeat tells the handler
    assert rig.seen == [(1, jobs.CancelReason.CANCELLED)]
    assert rig.status(job_id) is jobs.JobStatus.CANCELLED
    assert rig.queue.stats().processing_jobs == 0


def test_prefetched_jobs_wait_for_a_slot_and_go_back_at_shutdown() -> None:
    with running(num_workers=1, prefetch=2) as rig:
        _prefetch_and_stop(rig)


def _prefetch_and_stop(rig: Rig) -> None:
    ids = rig.client.enqueue_many("block", [1, 2, 3, 4])
    rig.started()
    # One running and two prefetched: the capacity; the fourth stays in the queue.
    wait_until(lambda: rig.queue.stats().processing_jobs == 3, timeout=5)
    assert rig.queue.stats().pending_jobs == 1

    rig.client.stop(timeout=0)  # the running one is interrupted and handed back

    assert rig.seen == [(1, jobs.CancelReason.SHUTDOWN)]
    assert [rig.status(i) for i in ids] == [jobs.JobStatus.PENDING] * 4
    # Handed back, not failed: the attempts do not count.
    assert [rig.client.get(i).attempts for i in ids] == [0, 0, 0, 0]
    assert rig.queue.workers() == []


def test_outcomes_wait_while_the_queue_is_unreachable(rig: Rig) -> None:
    job_id = rig.client.enqueue("block", "x")
    rig.started()
    rig.queue.set_unavailable(True)
    rig.release.set()
    wait_until(lambda: rig.seen, timeout=5)  # the handler returned; its outcome waits
    rig.queue.set_unavailable(False)
    assert rig.client.result(job_id, timeout=5) == "x"
    assert rig.queue.stats().rejected_writes == 0


def test_a_pool_serves_several_queues_of_one_store() -> None:
    clock = ManualClock()
    emails = MemoryQueue("emails", clock=clock)
    reports = emails.sibling("reports")
    registry = jobs.Registry()
    registry.register_func("echo", lambda ctx, payload: payload)
    worker = jobs.Client(
        jobs.ClientConfig(
            queue=emails,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(queues=["emails", "reports"]),
        )
    )
    producer = jobs.Client(jobs.ClientConfig(queue=reports))
    with worker:
        worker.start()
        job_id = producer.enqueue("echo", "r")
        assert producer.result(job_id, timeout=5) == "r"


def test_drain_runs_a_memory_queue_in_the_calling_thread() -> None:
    clock = ManualClock()
    registry = jobs.Registry()
    registry.register_func("fail_once", _fail_once)
    client = jobs.Client(jobs.ClientConfig(queue=MemoryQueue(clock=clock), registry=registry))
    client.enqueue("fail_once", 1, jobs.JobConfig(retry_backoff=jobs.ExplicitBackoff([60])))
    ran = drain(client)  # the retry's backoff is skipped (`advance`)
    assert [(job.status, job.attempts) for job in ran] == [
        (jobs.JobStatus.SCHEDULED, 1),
        (jobs.JobStatus.COMPLETED, 2),
    ]


def test_a_client_config_takes_a_memory_queue_but_the_scheduler_refuses_it() -> None:
    client = jobs.Client(jobs.ClientConfig(queue=MemoryQueue()))
    with pytest.raises(jobs.ConfigError, match="scheduler keeps its state in Redis"):
        jobs.Scheduler(client)
    with pytest.raises(jobs.ConfigError, match="queue must be a RedisQueue"):
        jobs.ClientConfig(queue=object())  # type: ignore[arg-type]
    with pytest.raises(jobs.ConfigError, match="ManualClock"):
        MemoryQueue().advance(1)


@pytest.mark.parametrize("threads", [1, 8, 16, 40])
def test_automatic_prefetch_is_per_thread_up_to_a_bound(threads: int) -> None:
    pool = WorkerPool(MemoryQueue(), jobs.Registry(), jobs.WorkerPoolConfig(num_workers=threads))
    assert pool._prefetch() == 0  # no job measured yet
    # Jobs short enough for the threads to get through the whole buffer in BUFFER_WAIT.
    pool._mean_duration, pool._backlog = BUFFER_WAIT / PREFETCH_PER_THREAD / 2, True
    expected = min(PREFETCH_PER_THREAD * threads, PREFETCH_MOST)
    assert pool._prefetch() == expected
    assert pool._capacity() == threads + expected
    pool._backlog = False  # a job that comes to an idle queue stays there
    assert pool._prefetch() == 0


@pytest.mark.parametrize("threads", [1, 8, 40])
def test_automatic_prefetch_buffers_no_more_than_the_threads_run_in_buffer_wait(
    threads: int,
) -> None:
    # Past CONFIRM_AFTER in the buffer a job costs a round trip of its own before it
    # starts: a buffer sized for fast jobs would make slower ones pay it by the dozen.
    pool = WorkerPool(MemoryQueue(), jobs.Registry(), jobs.WorkerPoolConfig(num_workers=threads))
    pool._backlog = True
    pool._mean_duration = BUFFER_WAIT / 2  # two jobs per thread in BUFFER_WAIT
    assert pool._prefetch() == min(2 * threads, PREFETCH_MOST)
    assert BUFFER_WAIT < CONFIRM_AFTER
    pool._mean_duration = BUFFER_WAIT * threads * 2  # half a job in all
    assert pool._prefetch() == 0
    pool._mean_duration = 0.0  # a clock too coarse to see a job's time
    assert pool._prefetch() == min(PREFETCH_PER_THREAD * threads, PREFETCH_MOST)


def _drain_short_jobs(queue: MemoryQueue) -> tuple[jobs.Client, list[str]]:
    """Run 300 short jobs through a pool of 2 threads fetching 8 ahead, on ``queue``."""
    registry = jobs.Registry()
    registry.register_func("echo", lambda ctx, payload: payload)
    config = jobs.WorkerPoolConfig(num_workers=2, prefetch=8, poll_interval=5, shutdown_timeout=5)
    client = jobs.Client(
        jobs.ClientConfig(queue=queue, registry=registry, worker_pool_config=config)
    )
    ids = [str(i) for i in client.enqueue_many("echo", list(range(300)))]
    client.start()
    try:
        wait_until(lambda: queue.stats().completed_jobs == len(ids), timeout=5)
    finally:
        client.stop(timeout=1)
    return client, ids


class _Recording(MemoryQueue):
    """A memory queue that logs each fetching exchange sent and answered."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(clock=ManualClock())
        self.events = events

    def begin_exchange(self, outcomes: Any, count: int, lease: Any, *, request: Any = None) -> Any:
        answer = super().begin_exchange(outcomes, count, lease, request=request)
        if not count and request is None:
            return answer  # a write alone (the writer thread's)
        self.events.append("sent")

        def answered() -> Any:
            self.events.append("answered")
            return answer()

        return answered


def test_a_backlog_of_short_jobs_is_fetched_while_the_last_fetch_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `Fetching._pipelined`: the next exchange goes before the jobs of the one just
    # answered are queued for the slots (the queue works while the fetcher does), and
    # never is more than one exchange unanswered.
    events: list[str] = []
    queue = _Recording(events)
    took = WorkerPool._took

    def logged_took(pool: WorkerPool, *args: Any) -> None:
        events.append("took")
        took(pool, *args)

    monkeypatch.setattr(WorkerPool, "_took", logged_took)
    client, ids = _drain_short_jobs(queue)
    exchanges = [e for e in events if e != "took"]
    assert exchanges == ["sent", "answered"] * (len(exchanges) // 2)
    assert "answered,sent,took" in ",".join(events)
    assert [client.get(i).attempts for i in ids] == [1] * len(ids)


class _AwayOnce(MemoryQueue):
    """A memory queue that refuses the first exchange sent ahead, as an unreachable one."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock())
        self.refused = 0

    def begin_exchange(self, outcomes: Any, count: int, lease: Any, *, request: Any = None) -> Any:
        if not self.refused:
            self.refused += 1
            raise jobs.RedisUnavailable("the queue is away for a moment")
        return super().begin_exchange(outcomes, count, lease, request=request)


def test_jobs_fetched_are_taken_though_the_exchange_after_them_could_not_be_sent() -> None:
    # Else they would sit leased to a pool that never runs them, until their leases
    # expire (which a manual clock never lets happen: the drain would not finish).
    queue = _AwayOnce()
    client, ids = _drain_short_jobs(queue)
    assert queue.refused == 1
    assert [client.get(i).attempts for i in ids] == [1] * len(ids)
