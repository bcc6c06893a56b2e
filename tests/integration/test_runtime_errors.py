"""Errors outside the handlers: the worker runtime survives them and every job ends.

Issue 11, findings 3 and 4, and its general guard: an outcome text that does not encode,
a payload class that raises, a backoff that cannot be used, and an exception injected at
each stage of the runtime (decoding, the handler's wrapper, encoding and writing
outcomes, hooks, the heartbeat, the fetcher) must never end a thread silently nor leave
a job held without an outcome.
"""

from __future__ import annotations

import decimal
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import jobs
from jobs import _codec, _record
from jobs.registry import RegisteredHandler
from jobs.worker import _attempt, _watchdog
from tests.helpers import wait_until
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

#: What ``os.listdir`` gives for a file whose name is Latin-1, not UTF-8.
NON_UTF8_NAME = os.fsdecode(b"r\xe9sum\xe9.txt")

FINAL = (jobs.JobStatus.COMPLETED, jobs.JobStatus.FAILED)


def _together(parties: int) -> Callable[[jobs.JobContext, Any], Any]:
    """Handlers that return together, so that their outcomes are written in one batch."""
    barrier = threading.Barrier(parties)

    def handler(ctx: jobs.JobContext, payload: Any) -> Any:
        barrier.wait(timeout=10)
        if payload == "bad":
            raise ValueError(f"cannot parse {NON_UTF8_NAME}")
        return payload

    return handler


# -- finding 3: an outcome that does not encode ---------------------------------------------


def test_an_error_naming_a_non_utf8_file_is_recorded_with_its_batch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    registry = jobs.Registry()
    registry.register_func("t", _together(2))
    once = jobs.JobConfig(max_retries=0)
    with make_client(redis_url, registry, start=False, num_workers=2) as client:
        bad = client.enqueue("t", "bad", once)
        good = client.enqueue("t", "good", once)
        client.start()
        failed = wait_for_status(client, bad, jobs.JobStatus.FAILED)
        assert wait_for_status(client, good, jobs.JobStatus.COMPLETED).result == "good"
    # The undecodable bytes stay visible, escaped.
    assert failed.error == "ValueError: cannot parse r\\udce9sum\\udce9.txt"
    trace = redis_client.hget(client.queue.keys.job(bad), "traceback")
    assert isinstance(trace, bytes)
    assert b"cannot parse r\\udce9sum\\udce9.txt" in trace


@pytest.mark.parametrize(
    ("num_workers", "parties"),
    # One slot: the fetcher writes each outcome with its next fetch. Four slots and two
    # jobs: the fetcher waits for new work and the writer writes both outcomes at once.
    [(1, 1), (4, 2)],
    ids=["with-a-fetch", "by-the-writer"],
)
def test_an_outcome_that_does_not_encode_fails_alone(
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    num_workers: int,
    parties: int,
) -> None:
    # Without the escaping, redis-py itself raises UnicodeEncodeError for the bad outcome:
    # the batch is written again one outcome at a time, and the bad one is recorded as a
    # failure saying why.
    monkeypatch.setattr(_codec, "storable", lambda value: value)
    caplog.set_level(logging.WARNING, logger="jobs")
    registry = jobs.Registry()
    registry.register_func("t", _together(parties))
    registry.register_func("ok", lambda ctx, payload: payload)
    once = jobs.JobConfig(max_retries=0)
    with make_client(redis_url, registry, start=False, num_workers=num_workers) as client:
        bad = client.enqueue("t", "bad", jobs.JobConfig(max_retries=0, priority=1))
        good = client.enqueue("t", "good", once)
        client.start()
        failed = wait_for_status(client, bad, jobs.JobStatus.FAILED)
        assert wait_for_status(client, good, jobs.JobStatus.COMPLETED).result == "good"
        after = client.enqueue("ok", "after")
        assert wait_for_status(client, after, jobs.JobStatus.COMPLETED).result == "after"
        pool = client._pool
        assert pool is not None
        # The pool lets go of a job once it has read the reply to its write: just after
        # another connection can see the job completed.
        wait_until(lambda: pool.in_flight == 0)
    assert failed.error is not None
    assert failed.error.startswith("ValueError: cannot parse r\\udce9sum\\udce9.txt (")
    assert "UnicodeEncodeError" in failed.error
    logged = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert [getattr(r, "job_id", None) for r in logged] == [bad], caplog.text
    assert logged[0].levelno == logging.ERROR and logged[0].exc_info


def test_an_outcome_that_cannot_be_written_at_all_comes_back(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch, the outcome alone and the failure standing in for it are all refused:
    # the pool lets the lease go, and the job is re-delivered.
    refused = _Inject(
        jobs.RedisQueue.exchange, lambda: RuntimeError("refused"), 3, _writes_outcomes
    )
    monkeypatch.setattr(jobs.RedisQueue, "exchange", refused.method())
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        job_id = client.enqueue("ok", 1)
        client.start()
        job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
    assert refused.fired == 3
    assert job.attempts == 2
    assert job.lost_leases == 1


# -- finding 4: errors around the handler ----------------------------------------------------


@attrs.define
class Order:
    amount: decimal.Decimal = attrs.field(converter=decimal.Decimal)


@pytest.mark.parametrize("timeout", [None, 1], ids=["no-timeout", "timeout"])
def test_a_payload_class_that_raises_fails_the_job_for_good(
    redis_url: str, timeout: int | None
) -> None:
    registry = jobs.Registry()
    ran: list[Any] = []
    registry.register("order", lambda ctx, order: ran.append(order), payload_type=Order)
    registry.register_func("ok", lambda ctx, payload: ran.append(payload))
    config = jobs.JobConfig(timeout=timeout, max_retries=3)
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        # From a producer that does not know the class (one that does refuses it at once).
        producer = jobs.Client(jobs.ClientConfig(queue=client.queue))
        bad = producer.enqueue("order", {"amount": "12,50"}, config)  # InvalidOperation
        after = client.enqueue("ok", "after")
        client.start()
        failed = wait_for_status(client, bad, jobs.JobStatus.FAILED)
        # The one slot survived it.
        wait_for_status(client, after, jobs.JobStatus.COMPLETED)
    assert failed.attempts == 1  # retrying the same payload cannot help
    assert failed.error is not None
    assert failed.error.startswith("PayloadError: payload does not fit Order: InvalidOperation"), (
        failed.error
    )
    assert ran == ["after"]


def test_an_error_around_the_handler_is_logged_and_the_slot_goes_on(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jobs")
    broken = _Inject(_attempt.run, lambda: RuntimeError("a bug around the handler"), times=1)
    monkeypatch.setattr(_attempt, "run", broken)
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        first = client.enqueue("ok", 1, config)
        second = client.enqueue("ok", 2, config)
        client.start()
        job = wait_for_status(client, first, jobs.JobStatus.COMPLETED)
        wait_for_status(client, second, jobs.JobStatus.COMPLETED)
    assert broken.fired == 1
    assert job.attempts == 2
    logged = [r for r in caplog.records if r.name == "jobs.worker" and r.exc_info]
    assert len(logged) == 1, caplog.text
    assert logged[0].levelno == logging.ERROR
    assert getattr(logged[0], "job_id", None) == first
    assert "RuntimeError: a bug around the handler" in caplog.text


def test_an_unusable_stored_backoff_still_schedules_the_retry(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobs.job")
    calls: list[int] = []

    def fails_once(ctx: jobs.JobContext, payload: Any) -> str:
        calls.append(ctx.job.attempts)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return "done"

    registry = jobs.Registry()
    registry.register_func("t", fails_once)
    registry.register_func("ok", lambda ctx, payload: payload)
    with make_client(redis_url, registry, start=False, num_workers=1) as client:
        job_id = client.enqueue("t", 1, jobs.JobConfig(max_retries=1))
        # Written by an older version, or by hand: an infinite delay no longer validates.
        redis_client.hset(
            client.queue.keys.job(job_id), "backoff", '{"kind": "explicit", "delays": [Infinity]}'
        )
        client.start()
        job = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        wait_for_status(client, client.enqueue("ok", 1), jobs.JobStatus.COMPLETED)
    assert job.attempts == 2
    warned = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    assert warned and "retry backoff is unusable" in warned[0].getMessage(), caplog.text


def test_a_huge_backoff_is_cut_to_a_century(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: 1 / 0)
    config = jobs.JobConfig(
        max_retries=1, retry_backoff=jobs.ExponentialBackoff(base=1e300, max=1e308)
    )
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("t", 1, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.SCHEDULED)
    assert job.run_at is not None
    assert job.created_at is not None
    years = (job.run_at - job.created_at).days / 365.25
    assert 99 < years < 101


# -- the general guard: a failure injected at each stage -----------------------------------


class _Inject:
    """Wraps ``func``: its first ``times`` calls from the pool's threads raise instead.

    Only calls whose arguments pass ``when``, if given. Calls from the test's own thread
    (``client.get`` decodes records too) go through.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        exc: Callable[[], BaseException],
        times: int,
        when: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> None:
        self._func = func
        self._exc = exc
        self._times = times
        self._when = when
        self._lock = threading.Lock()
        self.fired = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("jobs-") and (
            self._when is None or self._when(args)
        ):
            with self._lock:
                fire = self.fired < self._times
                self.fired += fire
            if fire:
                raise self._exc()
        return self._func(*args, **kwargs)

    def method(self) -> Callable[..., Any]:
        """The same, as a function: a class attribute that binds ``self``."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return self(*args, **kwargs)

        return call


def _writes_outcomes(args: tuple[Any, ...]) -> bool:
    _queue, outcomes, *_ = args
    return bool(outcomes)


#: name -> (owner, attribute, is a method, which calls): where the runtime is broken.
STAGES: dict[str, tuple[object, str, bool, Callable[[tuple[Any, ...]], bool] | None]] = {
    "decode": (_record, "decode_job", False, None),
    "payload": (RegisteredHandler, "payload", True, None),
    "handler-wrapper": (_attempt, "run", False, None),
    "slot-bookkeeping": (_watchdog.Watchdog, "started", True, None),
    "result-encode": (_codec, "dumps", False, None),
    "retry-delay": (_attempt, "backoff_from_spec", False, None),
    "error-text": (_codec, "describe", False, None),
    "outcome-write": (jobs.RedisQueue, "exchange", True, _writes_outcomes),
    "hook-report": (_attempt, "recorded_job", False, None),
    "heartbeat": (jobs.RedisQueue, "heartbeat", True, None),
    # A pool of one queue waits and fetches in one call (a pool of several: wait_for_work).
    "fetch-wait": (jobs.RedisQueue, "wait_and_fetch", True, None),
}

KINDS: dict[str, Callable[[], BaseException]] = {
    "RuntimeError": lambda: RuntimeError("injected"),
    "SystemExit": lambda: SystemExit("injected"),
}


class _Hooks:
    """Success and error hooks that raise on their first calls (the "hooks" stage)."""

    def __init__(self, exc: Callable[[], BaseException] | None) -> None:
        self._exc = exc
        self.calls = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1
        if self._exc is not None and self.calls <= 2:
            raise self._exc()


def _fails_first(ctx: jobs.JobContext, payload: Any) -> Any:
    if ctx.job.attempts == 1:
        raise ValueError(f"first attempt of {payload} fails")
    return payload


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("stage", [*STAGES, "hooks"])
def test_a_failure_at_any_stage_ends_no_thread_and_holds_no_job(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, stage: str, kind: str
) -> None:
    workers = 3
    injected: _Inject | None = None
    if stage in STAGES:
        owner, name, is_method, when = STAGES[stage]
        injected = _Inject(getattr(owner, name), KINDS[kind], times=2, when=when)
        monkeypatch.setattr(owner, name, injected.method() if is_method else injected)
    hooks = _Hooks(KINDS[kind] if stage == "hooks" else None)
    together = threading.Barrier(workers)

    def rendezvous(ctx: jobs.JobContext, payload: Any) -> Any:
        together.wait(timeout=10)  # only if every slot still runs
        return payload

    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    registry.register_func("flaky", _fails_first)
    registry.register_func("rendezvous", rendezvous)
    config = jobs.JobConfig(max_retries=3, retry_backoff=jobs.NoBackoff())
    with make_client(
        redis_url,
        registry,
        start=False,
        num_workers=workers,
        error_handler=hooks,
        success_handler=hooks,
    ) as client:
        ids = [client.enqueue(t, n, config) for n in range(4) for t in ("ok", "flaky")]
        client.start()
        pool = client._pool
        assert pool is not None

        def settled() -> bool:
            return all(client.get(i).status in FINAL for i in ids) and pool.in_flight == 0

        wait_until(settled, timeout=20, message=f"jobs still held after a failure at {stage}")
        if injected is not None:
            assert injected.fired, f"nothing reached the {stage} stage"
        else:
            assert hooks.calls > 2
        loops = [pool._fetcher, pool._outbox.loop, pool._heartbeat.loop, pool._watchdog.loop]
        assert pool._hooks is not None
        assert all(loop.is_alive() for loop in [*loops, pool._hooks.loop])
        # Every slot still runs: as many jobs as slots run at once.
        monkeypatch.undo()
        last = [client.enqueue("rendezvous", n, config) for n in range(workers)]
        for job_id in last:
            assert wait_for_status(client, job_id, *FINAL).status is jobs.JobStatus.COMPLETED
