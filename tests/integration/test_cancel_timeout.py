"""Cancellation and timeouts: tokens, reasons, fencing of late results, slot replacement.

API.md sections "Enqueue, track, cancel, stats" (cancel) and "Handlers, cancellation
tokens, timeouts".
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import (
    Gate,
    make_client,
    recorder,
    wait_for_status,
    wait_no_jobs_threads,
)


class Cooperative:
    """A handler that sleeps on its token and records what it saw when woken."""

    def __init__(self, seconds: float = 30) -> None:
        self.seconds = seconds
        self.entered = threading.Event()
        self.woken = threading.Event()
        self.returned = threading.Event()
        self.slept_fully: list[bool] = []
        self.cancelled: list[bool] = []
        self.reasons: list[jobs.CancelReason | None] = []
        self.raised: list[type[BaseException] | None] = []

    def __call__(self, ctx: jobs.JobContext, payload: Any) -> str:
        assert not ctx.cancelled
        assert ctx.cancel_reason is None
        ctx.raise_if_cancelled()  # a no-op while not cancelled
        self.entered.set()
        self.slept_fully.append(ctx.sleep(self.seconds))
        self.cancelled.append(ctx.cancelled)
        self.reasons.append(ctx.cancel_reason)
        try:
            ctx.raise_if_cancelled()
        except jobs.JobsError as exc:
            self.raised.append(type(exc))
        else:
            self.raised.append(None)
        self.woken.set()
        self.returned.set()
        return "late"


# -- cancel before and after running ------------------------------------------------------


def test_cancel_pending_job_never_runs(redis_url: str) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        job_id = client.enqueue("t", "cancelled")
        assert client.cancel(job_id) is True
        job = client.get(job_id)
        assert job.status is jobs.JobStatus.CANCELLED
        assert job.completed_at is not None
        assert job.attempts == 0
        stats = client.stats()
        assert (stats.cancelled_jobs, stats.pending_jobs) == (1, 0)
        client.start()
        # FIFO: once a job enqueued after it has run, the cancelled one had its chance.
        wait_for_status(client, client.enqueue("t", "marker"), jobs.JobStatus.COMPLETED)
        assert client.cancel(job_id) is False
        assert client.get(job_id).status is jobs.JobStatus.CANCELLED
    assert seen == ["marker"]


def test_cancel_scheduled_job_never_runs(redis_url: str) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    delayed = jobs.JobConfig(delay=timedelta(milliseconds=200))
    with make_client(redis_url, registry, num_workers=1) as client:
        job_id = client.enqueue("t", "cancelled", jobs.JobConfig(delay=30))
        assert client.get(job_id).status is jobs.JobStatus.SCHEDULED
        assert client.cancel(job_id) is True
        assert client.get(job_id).status is jobs.JobStatus.CANCELLED
        assert client.stats().scheduled_jobs == 0
        wait_for_status(client, client.enqueue("t", "marker", delayed), jobs.JobStatus.COMPLETED)
    assert seen == ["marker"]


def test_cancel_job_waiting_for_a_retry(redis_url: str) -> None:
    calls: list[int] = []

    def failing(ctx: jobs.JobContext, payload: Any) -> None:
        calls.append(ctx.job.attempts)
        raise RuntimeError("try later")

    registry = jobs.Registry()
    registry.register_func("t", failing)
    config = jobs.JobConfig(max_retries=3, retry_backoff=jobs.LinearBackoff(step=30))
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("t", 1, config)
        wait_for_status(client, job_id, jobs.JobStatus.SCHEDULED)
        assert client.cancel(job_id) is True
        job = client.get(job_id)
        stats = client.stats()
    assert calls == [1]
    assert job.status is jobs.JobStatus.CANCELLED
    assert job.error == "RuntimeError: try later"
    assert (stats.scheduled_jobs, stats.cancelled_jobs, stats.failed_jobs) == (0, 1, 0)


def test_cancel_of_finished_jobs_returns_false(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: {"kept": True})
    registry.register_func("bad", lambda ctx, payload: 1 / 0)
    with make_client(redis_url, registry) as client:
        ok = client.enqueue("ok", 1)
        bad = client.enqueue("bad", 1, jobs.JobConfig(max_retries=0))
        wait_for_status(client, ok, jobs.JobStatus.COMPLETED)
        wait_for_status(client, bad, jobs.JobStatus.FAILED)
        assert client.cancel(ok) is False
        assert client.cancel(bad) is False
        completed, failed = client.get(ok), client.get(bad)
        stats = client.stats()
    assert completed.status is jobs.JobStatus.COMPLETED
    assert completed.result == {"kept": True}
    assert failed.status is jobs.JobStatus.FAILED
    assert failed.error == "ZeroDivisionError: division by zero"
    assert stats.cancelled_jobs == 0


# -- cancel while running -----------------------------------------------------------------


# The default 30 s lease too: an idle pool's heartbeat sleeps at the idle pace, and must
# switch to the busy one as soon as it takes a job, or a cancel waits for the next beat.
@pytest.mark.parametrize("lease", [1, 30])
def test_cancel_running_job_cancels_its_token(redis_url: str, lease: float) -> None:
    handler = Cooperative()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(
        redis_url, registry, num_workers=1, lease=lease, shutdown_timeout=0.1
    ) as client:
        # Right after the pool's first heartbeat, as for a pool that was idle.
        wait_until(client.workers, timeout=5)
        job_id = client.enqueue("t", 1, jobs.JobConfig(max_retries=3))
        assert handler.entered.wait(5)
        assert client.cancel(job_id) is True
        # Recorded at once, before the handler even knows.
        right_after = client.get(job_id)
        assert right_after.status is jobs.JobStatus.CANCELLED
        wait_until(handler.woken.is_set, timeout=2, message="token not cancelled within 2 s")
        assert handler.returned.wait(5)
        assert client.cancel(job_id) is False
        # Once stop() has settled everything, the late "late" result is gone for sure.
        client.stop()
        job = client.get(job_id)
        stats = client.stats()
    assert handler.slept_fully == [False]
    assert handler.cancelled == [True]
    assert handler.reasons == [jobs.CancelReason.CANCELLED]
    assert handler.raised == [jobs.JobCancelled]
    assert job.status is jobs.JobStatus.CANCELLED
    assert job.result is None
    assert job.attempts == 1
    assert job.completed_at == right_after.completed_at
    assert (stats.cancelled_jobs, stats.completed_jobs, stats.retried_attempts) == (1, 0, 0)
    # Dropped in the pool, not sent to Redis to be refused by the fence.
    assert stats.rejected_writes == 0
    assert stats.pending_jobs + stats.scheduled_jobs + stats.processing_jobs == 0


def test_cancelled_handler_raising_is_not_retried(redis_url: str) -> None:
    entered = threading.Event()
    calls: list[int] = []

    def handler(ctx: jobs.JobContext, payload: Any) -> None:
        calls.append(ctx.job.attempts)
        entered.set()
        ctx.sleep(30)
        ctx.raise_if_cancelled()

    registry = jobs.Registry()
    registry.register_func("t", handler)
    registry.register_func("marker", lambda ctx, payload: None)
    config = jobs.JobConfig(max_retries=5, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, num_workers=1) as client:
        job_id = client.enqueue("t", 1, config)
        assert entered.wait(5)
        assert client.cancel(job_id) is True
        # A later job runs in the same single slot: the cancelled one had every chance.
        wait_for_status(client, client.enqueue("marker", 1), jobs.JobStatus.COMPLETED)
        client.stop()
        job = client.get(job_id)
    assert calls == [1]
    assert job.status is jobs.JobStatus.CANCELLED
    assert job.error is None


def test_uncooperative_cancelled_handler_frees_its_slot(redis_url: str) -> None:
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("block", gate)
        registry.register_func("quick", lambda ctx, payload: "quick")
        with make_client(redis_url, registry, num_workers=1) as client:
            job_id = client.enqueue("block", 1)
            assert gate.entered.wait(5)
            assert client.cancel(job_id) is True
            quick = client.enqueue("quick", 1)
            wait_for_status(client, quick, jobs.JobStatus.COMPLETED)
            assert not gate.returned.is_set()
            gate.release.set()
            assert gate.returned.wait(5)
            client.stop()
            job = client.get(job_id)
    assert job.status is jobs.JobStatus.CANCELLED
    assert job.result is None


# -- timeouts -----------------------------------------------------------------------------


def test_cooperative_timeout_is_recorded_and_retried(redis_url: str) -> None:
    handler = Cooperative()
    errors: list[tuple[jobs.Job, BaseException]] = []
    registry = jobs.Registry()
    registry.register_func("t", handler)
    config = jobs.JobConfig(timeout=0.3, max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(
        redis_url, registry, error_handler=lambda job, exc: errors.append((job, exc))
    ) as client:
        job_id = client.enqueue("t", 1, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
        stats = client.stats()
        wait_until(lambda: len(handler.raised) == 2, timeout=5)
    assert job.attempts == 2
    assert job.error is not None
    assert job.error.startswith("JobTimeout: ")
    assert job.result is None
    assert stats.retried_attempts == 1
    assert handler.slept_fully == [False, False]
    assert handler.reasons == [jobs.CancelReason.TIMEOUT, jobs.CancelReason.TIMEOUT]
    assert handler.raised == [jobs.JobTimeout, jobs.JobTimeout]
    assert [j.status for j, _ in errors] == [jobs.JobStatus.PENDING, jobs.JobStatus.FAILED]
    assert all(isinstance(exc, jobs.JobTimeout) for _, exc in errors)


def test_uncooperative_timeout_replaces_the_slot_and_discards_the_late_result(
    redis_url: str,
) -> None:
    with Gate(result="late") as gate:
        registry = jobs.Registry()
        registry.register_func("block", gate)
        registry.register_func("quick", lambda ctx, payload: "quick")
        config = jobs.JobConfig(timeout=0.3, max_retries=0)
        with make_client(redis_url, registry, num_workers=1) as client:
            job_id = client.enqueue("block", 1, config)
            assert gate.entered.wait(5)
            # Recorded failed at the deadline although the handler still blocks.
            job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
            assert not gate.returned.is_set()
            assert job.error is not None
            assert job.error.startswith("JobTimeout: ")
            # The single slot was handed to a fresh thread.
            quick = client.enqueue("quick", 1)
            assert wait_for_status(client, quick, jobs.JobStatus.COMPLETED).result == "quick"
            assert not gate.returned.is_set()
            gate.release.set()
            assert gate.returned.wait(5)
            client.stop()
            job = client.get(job_id)
            stats = client.stats()
    assert job.status is jobs.JobStatus.FAILED
    assert job.result is None
    assert job.attempts == 1
    assert (stats.failed_jobs, stats.completed_jobs, stats.rejected_writes) == (1, 1, 0)


def test_late_result_of_a_timed_out_attempt_does_not_overwrite_its_retry(redis_url: str) -> None:
    gate = Gate(result="first attempt, late")

    def handler(ctx: jobs.JobContext, payload: Any) -> object:
        if ctx.job.attempts == 1:
            return gate(ctx, payload)
        return "second attempt"

    registry = jobs.Registry()
    registry.register_func("t", handler)
    config = jobs.JobConfig(timeout=0.3, max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, num_workers=1) as client, gate:
        job_id = client.enqueue("t", 1, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert job.result == "second attempt"
        assert not gate.returned.is_set()
        gate.release.set()
        assert gate.returned.wait(5)
        client.stop()
        job = client.get(job_id)
    assert job.status is jobs.JobStatus.COMPLETED
    assert job.result == "second attempt"
    assert job.attempts == 2


# -- ctx.sleep ----------------------------------------------------------------------------


@pytest.mark.parametrize("duration", [0.05, timedelta(milliseconds=50), 0, -1])
def test_ctx_sleep_returns_true_after_the_full_time(redis_url: str, duration: Any) -> None:
    def handler(ctx: jobs.JobContext, payload: Any) -> list[Any]:
        return [ctx.sleep(duration), ctx.cancelled, ctx.cancel_reason]

    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry) as client:
        job = wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
    assert job.result == [True, False, None]


# -- capacity after abandoned handlers ----------------------------------------------------
# A handler that is timed out or cancelled is abandoned: its slot goes to a fresh thread
# at once, and when it finally returns, its thread leaves without taking capacity away.


class Gates:
    """A handler whose calls each block on their own gate, keyed by payload."""

    def __init__(self) -> None:
        self.gates: dict[Any, Gate] = {}

    def __call__(self, ctx: jobs.JobContext, payload: Any) -> object:
        return self.gates.setdefault(payload, Gate())(ctx, payload)

    def gate(self, key: Any) -> Gate:
        return self.gates.setdefault(key, Gate())

    def release_all(self) -> None:
        for gate in self.gates.values():
            gate.release.set()


def _wait_abandoned(gate: Gate) -> None:
    """Wait until the pool has given up on the gate's handler (its token is cancelled)."""
    wait_until(lambda: gate.contexts[-1].cancelled, timeout=2)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_pool_keeps_its_capacity_after_abandoned_handlers_return(redis_url: str, how: str) -> None:
    gates = Gates()
    registry = jobs.Registry()
    registry.register_func("block", gates)
    registry.register_func("quick", lambda ctx, payload: "quick")
    config = jobs.JobConfig(timeout=0.3 if how == "timeout" else None, max_retries=0)
    try:
        with make_client(redis_url, registry, num_workers=1) as client:
            # One after the other: never more than one handler is stuck at a time.
            for key in range(2):
                gate = gates.gate(key)
                job_id = client.enqueue("block", key, config)
                assert gate.entered.wait(5)
                if how == "cancel":
                    assert client.cancel(job_id)
                final = jobs.JobStatus.FAILED if how == "timeout" else jobs.JobStatus.CANCELLED
                wait_for_status(client, job_id, final)
                _wait_abandoned(gate)
                gate.release.set()
                assert gate.returned.wait(5)
            quick = client.enqueue("quick", 1)
            assert wait_for_status(client, quick, jobs.JobStatus.COMPLETED, timeout=3)
    finally:
        gates.release_all()
    wait_no_jobs_threads()


def test_cancelling_cooperative_running_jobs_keeps_the_pool_working(redis_url: str) -> None:
    entered: dict[int, threading.Event] = {n: threading.Event() for n in range(3)}
    returned: dict[int, threading.Event] = {n: threading.Event() for n in range(3)}

    def handler(ctx: jobs.JobContext, payload: int) -> None:
        entered[payload].set()
        ctx.sleep(30)  # stops at once when cancelled
        returned[payload].set()

    registry = jobs.Registry()
    registry.register_func("t", handler)
    registry.register_func("quick", lambda ctx, payload: "quick")
    with make_client(redis_url, registry, num_workers=1, shutdown_timeout=0.1) as client:
        for n in range(3):
            job_id = client.enqueue("t", n)
            assert entered[n].wait(5)
            assert client.cancel(job_id)
            assert returned[n].wait(5)
        quick = client.enqueue("quick", 1)
        assert wait_for_status(client, quick, jobs.JobStatus.COMPLETED, timeout=3)


def test_every_uncooperative_timeout_replaces_its_slot(redis_url: str) -> None:
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("block", gate)
        registry.register_func("quick", lambda ctx, payload: "quick")
        config = jobs.JobConfig(timeout=0.3, max_retries=0)
        with make_client(redis_url, registry, num_workers=1) as client:
            blocked = client.enqueue_many("block", [1, 2], config)
            for job_id in blocked:
                wait_for_status(client, job_id, jobs.JobStatus.FAILED)
            # Two handlers ignore their tokens at once; the one slot must still be replaced.
            quick = client.enqueue("quick", 1)
            try:
                wait_for_status(client, quick, jobs.JobStatus.COMPLETED, timeout=3)
            finally:
                gate.release.set()
