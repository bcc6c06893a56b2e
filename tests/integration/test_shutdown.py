"""Graceful shutdown: waiting for running jobs, handing jobs back, lifecycles and threads.

API.md sections "Shutdown" and "Queue, registry, client" (start/stop, ``with``,
producer-only clients).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from jobs.worker._outbox import Outbox
from tests.helpers import wait_until
from tests.integration._clients import (
    Gate,
    jobs_threads,
    make_client,
    recorder,
    unique_name,
    wait_for_status,
    wait_no_jobs_threads,
)

if TYPE_CHECKING:
    from datetime import timedelta


class BlockOnce:
    """Sleeps on its token on the first call only (until shutdown cancels it); then returns.

    Records every call's label, attempt number and what the first call saw when woken.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.woken = threading.Event()
        self.calls: list[tuple[Any, int]] = []
        self.reason: jobs.CancelReason | None = None
        self.raised: type[BaseException] | None = None
        self._lock = threading.Lock()

    def __call__(self, ctx: jobs.JobContext, payload: Any) -> Any:
        with self._lock:
            first = not self.calls
            self.calls.append((payload, ctx.job.attempts))
        if not first:
            return payload
        self.entered.set()
        ctx.sleep(30)
        self.reason = ctx.cancel_reason
        try:
            ctx.raise_if_cancelled()
        except jobs.JobsError as exc:
            self.raised = type(exc)
        self.woken.set()
        return "late"


def test_stop_waits_for_running_jobs(redis_url: str) -> None:
    gate = Gate(result="done")
    saw_cancel: list[bool] = []

    def handler(ctx: jobs.JobContext, payload: Any) -> object:
        result = gate(ctx, payload)
        saw_cancel.append(ctx.cancelled)
        return result

    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, shutdown_timeout=20) as client, gate:
        job_id = client.enqueue("t", 1)
        assert gate.entered.wait(5)
        stopper = threading.Thread(target=client.stop, name="test-stopper")
        stopper.start()
        try:
            wait_until(lambda: not client.running, timeout=5)
            # stop() is waiting for the handler, which is not told to stop yet.
            assert stopper.is_alive()
            assert client.get(job_id).status is jobs.JobStatus.PROCESSING
        finally:
            gate.release.set()
            stopper.join(10)
        assert not stopper.is_alive()
        job = client.get(job_id)
    assert job.status is jobs.JobStatus.COMPLETED
    assert job.result == "done"
    assert saw_cancel == [False]


def test_job_still_running_after_shutdown_timeout_goes_back_uncounted(redis_url: str) -> None:
    calls: list[int] = []
    entered = threading.Event()
    seen: dict[str, Any] = {}

    def handler(ctx: jobs.JobContext, payload: Any) -> str:
        calls.append(ctx.job.attempts)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        if len(calls) == 2:
            entered.set()
            seen["slept"] = ctx.sleep(30)
            seen["reason"] = ctx.cancel_reason
            try:
                ctx.raise_if_cancelled()
            except jobs.JobsError as exc:
                seen["raised"] = type(exc)
            return "late"
        return "finally"

    registry = jobs.Registry()
    registry.register_func("t", handler)
    name = unique_name()
    config = jobs.JobConfig(max_retries=3, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, name=name, shutdown_timeout=0.3) as client:
        job_id = client.enqueue("t", 1, config)
        assert entered.wait(5)
        assert client.get(job_id).attempts == 2
        client.stop()
        assert seen == {
            "slept": False,
            "reason": jobs.CancelReason.SHUTDOWN,
            "raised": jobs.WorkerShutdown,
        }
        back = client.get(job_id)
        stats = client.stats()
    assert back.status is jobs.JobStatus.PENDING
    assert back.attempts == 1  # the interrupted attempt is not counted
    assert back.error == "RuntimeError: first attempt fails"
    assert back.result is None
    assert (stats.pending_jobs, stats.processing_jobs, stats.retried_attempts) == (1, 0, 1)
    # Another client on the same queue runs it later.
    with make_client(redis_url, registry, name=name) as other:
        done = wait_for_status(other, job_id, jobs.JobStatus.COMPLETED)
    assert done.result == "finally"
    assert done.attempts == 2
    assert calls == [1, 2, 2]


def test_interrupted_job_goes_back_to_the_front_of_its_priority(redis_url: str) -> None:
    handler = BlockOnce()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    name = unique_name()
    with make_client(redis_url, registry, name=name, num_workers=1, shutdown_timeout=0.2) as client:
        first = client.enqueue("t", "A")
        assert handler.entered.wait(5)
        later = client.enqueue_many("t", ["B", "C"])
        urgent = client.enqueue("t", "D", jobs.JobConfig(priority=5))
        client.stop()
        assert handler.woken.wait(5)
        assert handler.reason is jobs.CancelReason.SHUTDOWN
        assert handler.raised is jobs.WorkerShutdown
        states = [client.get(i) for i in (first, *later, urgent)]
    assert [(j.status, j.attempts) for j in states] == [(jobs.JobStatus.PENDING, 0)] * 4
    with make_client(redis_url, registry, name=name, num_workers=1) as other:
        for job_id in (first, *later, urgent):
            wait_for_status(other, job_id, jobs.JobStatus.COMPLETED)
    # A higher priority still goes first; within priority 0, A is back ahead of B and C.
    assert handler.calls == [("A", 1), ("D", 1), ("A", 1), ("B", 1), ("C", 1)]


def test_jobs_not_started_go_back_at_once(redis_url: str) -> None:
    with Gate(result="first") as gate:
        registry = jobs.Registry()
        registry.register_func("t", gate)
        with make_client(redis_url, registry, num_workers=1, shutdown_timeout=20) as client:
            ids = client.enqueue_many("t", [1, 2, 3, 4])
            assert gate.entered.wait(5)
            stopper = threading.Thread(target=client.stop, name="test-stopper")
            stopper.start()
            try:
                wait_until(lambda: not client.running, timeout=5)
                # While stop() still waits for the first job, the rest are back already.
                others = [client.get(i) for i in ids[1:]]
                assert [(j.status, j.attempts) for j in others] == [(jobs.JobStatus.PENDING, 0)] * 3
                assert client.stats().processing_jobs == 1
            finally:
                gate.release.set()
                stopper.join(10)
            assert not stopper.is_alive()
            assert client.get(ids[0]).status is jobs.JobStatus.COMPLETED
            stats = client.stats()
    assert gate.job_ids == [ids[0]]
    assert (stats.pending_jobs, stats.processing_jobs, stats.completed_jobs) == (3, 0, 1)


def test_uncooperative_handler_at_shutdown_is_abandoned(redis_url: str) -> None:
    name = unique_name()
    with Gate(result="late") as gate:
        registry = jobs.Registry()
        registry.register_func("t", gate)
        with make_client(redis_url, registry, name=name, shutdown_timeout=0.2) as client:
            job_id = client.enqueue("t", 1)
            assert gate.entered.wait(5)
            client.stop()
            # stop() returned without the handler; only its thread is left (idle
            # executor threads end a moment after stop() returns).
            assert not gate.returned.is_set()
            wait_until(
                lambda: [t.name.startswith("jobs-worker") for t in jobs_threads()] == [True],
                timeout=5,
            )
            back = client.get(job_id)
            assert (back.status, back.attempts) == (jobs.JobStatus.PENDING, 0)
            gate.release.set()
            assert gate.returned.wait(5)
            wait_no_jobs_threads()
            # Its late result was dropped: still pending, no result.
            back = client.get(job_id)
            assert (back.status, back.result) == (jobs.JobStatus.PENDING, None)
        with make_client(redis_url, registry, name=name) as other:
            done = wait_for_status(other, job_id, jobs.JobStatus.COMPLETED)
    assert done.attempts == 1
    assert gate.job_ids == [job_id, job_id]


def test_no_jobs_threads_remain_after_stop(redis_url: str) -> None:
    wait_no_jobs_threads()
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: payload)
    hooks: list[str] = []
    with make_client(
        redis_url, registry, num_workers=4, success_handler=lambda job: hooks.append(job.id)
    ) as client:
        for job_id in client.enqueue_many("t", list(range(20))):
            wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        names = {t.name.split("_")[0] for t in jobs_threads()}
        assert {"jobs-fetcher", "jobs-writer", "jobs-heartbeat", "jobs-timeouts"} <= names
        assert "jobs-hooks" in names
        assert "jobs-worker" in names
        client.stop()
        wait_no_jobs_threads()
        assert not client.running
        # stop() is idempotent.
        client.stop()
    assert len(hooks) == 20


def test_stop_of_an_idle_pool_does_not_wait_for_its_poll(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: payload)
    with make_client(redis_url, registry, poll_interval=30) as client:
        wait_for_status(client, client.enqueue("t", 1), jobs.JobStatus.COMPLETED)
        stopper = threading.Thread(target=client.stop, name="test-stopper")
        stopper.start()
        # A hang check, not a speed check: the fetcher's 30 s wait must be woken.
        stopper.join(10)
        assert not stopper.is_alive()
        wait_no_jobs_threads()


def test_with_client_starts_and_stops(redis_url: str) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    queue = jobs.RedisQueue.from_url(redis_url, name=unique_name())
    try:
        config = jobs.ClientConfig(
            queue=queue,
            registry=registry,
            worker_pool_config=jobs.WorkerPoolConfig(lease=1, poll_interval=0.1),
        )
        with jobs.Client(config) as client:
            assert client.running
            wait_until(client.workers, timeout=5)
            wait_for_status(client, client.enqueue("t", "x"), jobs.JobStatus.COMPLETED)
        assert not client.running
        assert client.workers() == []
        # A second start/stop cycle of the same client works too.
        client.start()
        try:
            wait_for_status(client, client.enqueue("t", "y"), jobs.JobStatus.COMPLETED)
        finally:
            client.stop()
    finally:
        queue.close()
    assert seen == ["x", "y"]
    wait_no_jobs_threads()


def test_producer_only_client(redis_url: str) -> None:
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    name = unique_name()
    with make_client(redis_url, name=name) as producer:
        assert producer.config.registry is None
        with pytest.raises(jobs.ConfigError, match="registry"):
            producer.start()
        assert not producer.running
        # Entering and leaving `with` is fine for a producer: it just does not work jobs.
        with producer:
            first, second = producer.enqueue("t", 1), producer.enqueue("t", 2)
        assert producer.get(first).status is jobs.JobStatus.PENDING
        assert producer.cancel(second) is True
        stats = producer.stats()
        assert (stats.total_jobs, stats.pending_jobs, stats.cancelled_jobs) == (2, 1, 1)
        assert producer.workers() == []
        with make_client(redis_url, registry, name=name) as worker:
            wait_for_status(producer, first, jobs.JobStatus.COMPLETED)
            assert len(producer.workers()) == 1
            assert producer.workers()[0].id == worker.workers()[0].id
    assert seen == [1]


def test_stop_records_a_job_that_finishes_as_it_stops(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slot that finishes while stop() waits for it leaves the running set and queues
    # its outcome. A pause between the two (a thread switch) must not let stop() see
    # neither and stop the writer first: the job would stay processing and run again.
    put = Outbox.put

    def paused_put(self: Outbox, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)
        put(self, *args, **kwargs)

    monkeypatch.setattr(Outbox, "put", paused_put)
    gate = Gate(result="done")
    registry = jobs.Registry()
    registry.register_func("t", gate)
    with make_client(redis_url, registry, shutdown_timeout=20) as client, gate:
        job_id = client.enqueue("t", 1)
        assert gate.entered.wait(5)
        stopper = threading.Thread(target=client.stop, name="test-stopper")
        stopper.start()
        try:
            wait_until(lambda: not client.running, timeout=5)
        finally:
            gate.release.set()
            stopper.join(10)
        assert not stopper.is_alive()
        job = client.get(job_id)
        stats = client.stats()
    assert (job.status, job.result) == (jobs.JobStatus.COMPLETED, "done")
    assert (stats.completed_jobs, stats.processing_jobs) == (1, 0)


def test_stop_hands_back_jobs_of_a_fetch_still_in_flight(redis_url: str) -> None:
    # A fetch whose reply comes late (a stalled Redis) and after stop() stopped waiting
    # for the fetcher thread (poll_interval + 5 s): the job it leased must go back to the
    # queue, not stay leased to a pool that is gone until its lease runs out.
    entered, finish = threading.Event(), threading.Event()
    fetching, reply = threading.Event(), threading.Event()

    def handler(ctx: jobs.JobContext, payload: Any) -> Any:
        entered.set()
        finish.wait(30)
        return payload

    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, num_workers=1, lease=10) as client:
        queue = client.queue
        exchange = queue.exchange

        def late_fetch(
            outcomes: Any,
            count: int,
            lease: timedelta | None,
            *,
            request: str | None = None,
        ) -> Any:
            if count > 0:
                fetching.set()
                reply.wait(30)
            return exchange(outcomes, count, lease, request=request)

        stopper = threading.Thread(target=client.stop, name="test-stopper")
        try:
            first = client.enqueue("t", 1)
            assert entered.wait(5)
            queue.exchange = late_fetch  # type: ignore[method-assign]
            second = client.enqueue("t", 2)
            finish.set()  # the slot frees: the fetcher fetches (with the first's outcome)
            assert fetching.wait(5)
            stopper.start()
            stopper.join(6)
            assert stopper.is_alive(), "stop() returned with a fetch in flight"
        finally:
            reply.set()
            finish.set()
            if stopper.ident is not None:
                stopper.join(20)
        assert not stopper.is_alive()
        done, back = client.get(first), client.get(second)
        stats = client.stats()
    assert (done.status, (back.status, back.attempts)) == (
        jobs.JobStatus.COMPLETED,
        (jobs.JobStatus.PENDING, 0),
    )
    assert (stats.pending_jobs, stats.processing_jobs) == (1, 0)


def test_stop_returns_after_interrupted_handlers_have_returned(redis_url: str) -> None:
    # A service that embeds a pool tears down what handlers use (a database pool, open
    # files) once stop() returns: a handler cancelled with SHUTDOWN must have finished
    # its cleanup by then. The cleanup here lasts until stop() returns, or 1 s.
    entered = threading.Event()
    stop_returned = threading.Event()
    seen: dict[str, Any] = {}

    def handler(ctx: jobs.JobContext, payload: Any) -> str:
        entered.set()
        ctx.sleep(30)
        seen["reason"] = ctx.cancel_reason
        seen["raced"] = stop_returned.wait(1.0)  # cleanup still running when stop() returned
        return "cleaned up"

    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(
        redis_url, registry, shutdown_timeout=0.1, shutdown_grace=5, num_workers=1
    ) as client:
        job_id = client.enqueue("t", 1)
        assert entered.wait(5)
        client.stop()
        stop_returned.set()
        assert seen == {"reason": jobs.CancelReason.SHUTDOWN, "raced": False}
        back = client.get(job_id)
    assert (back.status, back.attempts) == (jobs.JobStatus.PENDING, 0)


def test_stop_waits_for_an_uncooperative_handler_no_longer_than_the_grace(
    redis_url: str,
) -> None:
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("t", gate)
        with make_client(redis_url, registry, shutdown_timeout=0.1, shutdown_grace=0.3) as client:
            client.enqueue("t", 1)
            assert gate.entered.wait(5)
            client.stop()
            assert not gate.returned.is_set()


def test_a_service_embeds_a_pool_from_its_own_threads_without_signal_handlers(
    redis_url: str,
) -> None:
    # README "Embedding in a service": the library installs no signal handler, and
    # start() and stop() work from any thread (here neither is the main thread).
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    seen, handler = recorder()
    registry = jobs.Registry()
    registry.register_func("t", handler)
    with make_client(redis_url, registry, start=False) as client:
        starter = threading.Thread(target=client.start, name="service-start")
        starter.start()
        starter.join(5)
        assert client.running
        job_id = client.enqueue("t", "x")
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        stopper = threading.Thread(target=client.stop, name="service-stop")
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive()
        assert not client.running
    assert seen == ["x"]
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_a_second_stop_cuts_the_grace_short(redis_url: str) -> None:
    # The second Ctrl-C of `python -m jobs worker`: stop(timeout=0) from another thread.
    with Gate() as gate:
        registry = jobs.Registry()
        registry.register_func("t", gate)
        with make_client(redis_url, registry, shutdown_timeout=0.1, shutdown_grace=60) as client:
            client.enqueue("t", 1)
            assert gate.entered.wait(5)
            stopper = threading.Thread(target=client.stop, name="test-stopper")
            stopper.start()
            try:
                # stop() has cancelled the handler and now waits out the grace for it.
                wait_until(lambda: gate.contexts[0].cancelled, timeout=5)
                client.stop(timeout=0)
                stopper.join(10)
                assert not stopper.is_alive()
            finally:
                gate.release.set()
                stopper.join(10)
