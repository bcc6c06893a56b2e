"""Failing attempts: retries and their backoff, permanent errors, unknown types, hooks.

API.md sections "Enqueue, track, cancel, stats" (JobConfig, backoff) and "Handlers,
cancellation tokens, timeouts" (PermanentError, unknown types, error/success handlers).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from jobs.worker import _pool
from tests.helpers import wait_until
from tests.integration._clients import make_client, wait_for_status

if TYPE_CHECKING:
    from collections.abc import Callable


class Flaky:
    """A handler that fails its first ``failures`` attempts, recording what it saw."""

    def __init__(self, failures: int, exc: Callable[[int], BaseException] | None = None) -> None:
        self.failures = failures
        self.exc = exc or (lambda n: ValueError(f"boom {n}"))
        self.attempts: list[int] = []
        self.started: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, ctx: jobs.JobContext, payload: Any) -> Any:
        with self._lock:
            self.attempts.append(ctx.job.attempts)
            self.started.append(ctx.job.started_at)
        if len(self.attempts) <= self.failures:
            raise self.exc(ctx.job.attempts)
        return {"attempt": ctx.job.attempts}


class Hooks:
    """error_handler and success_handler that record their calls."""

    def __init__(self, client_ref: list[jobs.Client] | None = None) -> None:
        self.errors: list[tuple[jobs.Job, BaseException]] = []
        self.successes: list[jobs.Job] = []
        self.stored_on_error: list[jobs.Job] = []
        self.stored_on_success: list[jobs.Job] = []
        self._client_ref = client_ref if client_ref is not None else []

    def on_error(self, job: jobs.Job, exc: BaseException) -> None:
        if self._client_ref:
            # Called "once it is recorded": the store already shows this failure.
            self.stored_on_error.append(self._client_ref[0].get(job.id))
        self.errors.append((job, exc))

    def on_success(self, job: jobs.Job) -> None:
        if self._client_ref:
            self.stored_on_success.append(self._client_ref[0].get(job.id))
        self.successes.append(job)

    def pool_kwargs(self) -> dict[str, Any]:
        return {"error_handler": self.on_error, "success_handler": self.on_success}


def _custom_backoff(attempt: int) -> float:
    return {1: 0.03, 2: 0.07}.get(attempt, 0.1)


@pytest.mark.parametrize(
    "backoff",
    [
        jobs.NoBackoff(),
        jobs.LinearBackoff(step=0.05),
        jobs.ExponentialBackoff(base=0.05),
        _custom_backoff,
    ],
    ids=["none", "linear", "exponential", "custom"],
)
def test_retries_follow_the_backoff_then_fail(
    redis_url: str, backoff: Callable[[int], float]
) -> None:
    flaky = Flaky(failures=99)
    hooks = Hooks()
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=2, retry_backoff=backoff)
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        job_id = client.enqueue("t", None, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
        stats = client.stats()
    assert job.attempts == 3
    assert flaky.attempts == [1, 2, 3]
    assert job.error == "ValueError: boom 3"
    assert job.result is None
    assert (stats.failed_jobs, stats.retried_attempts, stats.completed_jobs) == (1, 2, 0)
    # Each retry was due no sooner than its backoff after the failed attempt started,
    # and the next attempt started no sooner than that (all Redis clock).
    retried = [hook_job for hook_job, _ in hooks.errors[:2]]
    expected_status = jobs.JobStatus.PENDING if backoff(1) == 0 else jobs.JobStatus.SCHEDULED
    for n, hook_job in enumerate(retried, start=1):
        assert hook_job.status is expected_status
        assert hook_job.run_at is not None
        delay = timedelta(milliseconds=round(backoff(n) * 1000))
        assert hook_job.run_at - flaky.started[n - 1] >= delay
        assert flaky.started[n] >= hook_job.run_at


@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_max_retries_allows_exactly_n_plus_one_attempts(redis_url: str, max_retries: int) -> None:
    flaky = Flaky(failures=99, exc=lambda n: RuntimeError("always"))
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=max_retries, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        job = wait_for_status(client, client.enqueue("t", 1, config), jobs.JobStatus.FAILED)
    assert job.attempts == max_retries + 1
    assert flaky.attempts == list(range(1, max_retries + 2))
    assert job.error == "RuntimeError: always"
    assert job.max_retries == max_retries
    assert job.completed_at is not None


def test_a_retry_can_succeed(redis_url: str) -> None:
    flaky = Flaky(failures=2)
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=2, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        job = wait_for_status(client, client.enqueue("t", 1, config), jobs.JobStatus.COMPLETED)
    assert job.attempts == 3
    assert job.result == {"attempt": 3}


def test_permanent_error_fails_at_once(redis_url: str) -> None:
    flaky = Flaky(failures=99, exc=lambda n: jobs.PermanentError("bad input"))
    hooks = Hooks()
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=5, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        job = wait_for_status(client, client.enqueue("t", 1, config), jobs.JobStatus.FAILED)
        stats = client.stats()
    assert job.attempts == 1
    assert flaky.attempts == [1]
    assert job.error == "PermanentError: bad input"
    assert stats.retried_attempts == 0
    assert len(hooks.errors) == 1
    assert isinstance(hooks.errors[0][1], jobs.PermanentError)


def test_unknown_job_type_fails_and_is_retried_by_policy(redis_url: str) -> None:
    hooks = Hooks()
    registry = jobs.Registry()
    registry.register_func("known", lambda ctx, payload: None)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        job_id = client.enqueue("ghost", {"x": 1}, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
        stats = client.stats()
    assert job.error == "no handler registered for job type 'ghost'"
    assert job.attempts == 2
    assert stats.retried_attempts == 1
    assert [j.status for j, _ in hooks.errors] == [jobs.JobStatus.PENDING, jobs.JobStatus.FAILED]


def test_error_handler_sees_each_failed_attempt_as_recorded(redis_url: str) -> None:
    client_ref: list[jobs.Client] = []
    hooks = Hooks(client_ref)
    flaky = Flaky(failures=99, exc=lambda n: RuntimeError(f"nope {n}"))
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=2, retry_backoff=jobs.LinearBackoff(step=0.05))
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        client_ref.append(client)
        job_id = client.enqueue("t", {"k": "v"}, config)
        wait_for_status(client, job_id, jobs.JobStatus.FAILED)
        wait_until(lambda: len(hooks.errors) == 3, timeout=5)
    assert hooks.successes == []
    statuses = [job.status for job, _ in hooks.errors]
    assert statuses == [jobs.JobStatus.SCHEDULED, jobs.JobStatus.SCHEDULED, jobs.JobStatus.FAILED]
    for n, (job, exc) in enumerate(hooks.errors, start=1):
        assert job.id == job_id
        assert job.attempts == n
        assert job.error == f"RuntimeError: nope {n}"
        assert job.payload == {"k": "v"}
        assert isinstance(exc, RuntimeError)
        assert str(exc) == f"nope {n}"
    assert hooks.errors[-1][0].completed_at is not None
    # Each call came after its failure was written: the store already held its error.
    for n, stored in enumerate(hooks.stored_on_error, start=1):
        assert stored.attempts >= n
        assert stored.error is not None
        assert stored.error.startswith("RuntimeError: nope ")
        assert int(stored.error.rsplit(" ", 1)[1]) >= n
    assert hooks.stored_on_error[-1].status is jobs.JobStatus.FAILED
    assert hooks.stored_on_error[-1].error == "RuntimeError: nope 3"


def test_success_handler_called_once_with_the_completed_job(redis_url: str) -> None:
    client_ref: list[jobs.Client] = []
    hooks = Hooks(client_ref)
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: {"doubled": payload * 2})
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        client_ref.append(client)
        job_id = client.enqueue("t", 21)
        stored = wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
        wait_until(lambda: hooks.successes, timeout=5)
    # stop() ran every queued hook: nothing more can arrive now.
    assert len(hooks.successes) == 1
    job = hooks.successes[0]
    assert job.id == job_id
    assert job.status is jobs.JobStatus.COMPLETED
    assert job.result == {"doubled": 42}
    assert job.attempts == 1
    assert job.completed_at == stored.completed_at
    assert hooks.errors == []
    # Called once the completion was recorded.
    assert [(j.status, j.result) for j in hooks.stored_on_success] == [
        (jobs.JobStatus.COMPLETED, {"doubled": 42})
    ]


def test_a_raising_hook_does_not_stop_the_pool(redis_url: str) -> None:
    calls: list[str] = []

    def bad_hook(job: jobs.Job) -> None:
        calls.append(job.id)
        raise RuntimeError("hook bug")

    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: payload)
    with make_client(redis_url, registry, success_handler=bad_hook) as client:
        first = client.enqueue("t", 1)
        wait_until(lambda: calls, timeout=5)
        second = client.enqueue("t", 2)
        wait_for_status(client, second, jobs.JobStatus.COMPLETED)
        wait_until(lambda: len(calls) == 2, timeout=5)
    assert calls == [first, second]


def test_non_json_result_fails_the_job_for_good(redis_url: str) -> None:
    # Its side effects happened: a retry would repeat them only to fail the same way.
    hooks = Hooks()
    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: {"ids": {1, 2}})
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, **hooks.pool_kwargs()) as client:
        job = wait_for_status(client, client.enqueue("t", 1, config), jobs.JobStatus.FAILED)
    assert job.attempts == 1
    assert job.result is None
    assert job.error is not None
    assert job.error.startswith("PayloadError: result is not JSON-serializable")
    assert "set" in job.error
    assert all(isinstance(exc, jobs.PayloadError) for _, exc in hooks.errors)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_exception_whose_str_raises_still_records_an_error(redis_url: str) -> None:
    flaky = Flaky(failures=99, exc=lambda n: _Unprintable())
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    registry.register_func("ok", lambda ctx, payload: "fine")
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry) as client:
        job_id = client.enqueue("t", 1, config)
        job = wait_for_status(client, job_id, jobs.JobStatus.FAILED)
        # The pool survived it: the next job still runs.
        wait_for_status(client, client.enqueue("ok", 1), jobs.JobStatus.COMPLETED)
    assert job.attempts == 2
    assert job.error is not None
    assert job.error.startswith("_Unprintable")


def test_system_exit_in_a_handler_fails_only_the_attempt(redis_url: str) -> None:
    flaky = Flaky(failures=1, exc=lambda n: SystemExit(3))
    registry = jobs.Registry()
    registry.register_func("t", flaky)
    config = jobs.JobConfig(max_retries=1, retry_backoff=jobs.NoBackoff())
    with make_client(redis_url, registry, num_workers=1) as client:
        job = wait_for_status(client, client.enqueue("t", 1, config), jobs.JobStatus.COMPLETED)
    assert job.attempts == 2
    assert job.error == "SystemExit: 3"


def test_an_oversized_result_fails_the_job_for_good_and_the_pool_goes_on(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("big", lambda ctx, payload: "x" * payload)
    config = jobs.JobConfig(max_retries=3)
    options = {"max_result_bytes": 1000}
    with make_client(redis_url, registry, queue_options=options, num_workers=1) as client:
        big = client.enqueue("big", 5000, config)
        small = client.enqueue("big", 10, config)
        assert client.wait(small, timeout=10).result == "x" * 10
        job = client.wait(big, timeout=10)
    assert job.status is jobs.JobStatus.FAILED
    assert job.attempts == 1
    assert job.error == "PayloadError: result is 5002 bytes, over max_result_bytes (1000)"


def test_a_result_longer_than_redis_takes_fails_for_good_and_the_pool_goes_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # max_result_bytes above the server's proto-max-bulk-len: Redis would answer the
    # write with a protocol error and close the connection, which looks like an outage,
    # so the batch holding it was sent again for ever and the pool fetched nothing else.
    mib = 1 << 20
    registry = jobs.Registry()
    registry.register_func("big", lambda ctx, payload: "x" * payload)
    config = jobs.JobConfig(max_retries=3)
    options = {"max_result_bytes": 4 * mib}
    with make_client(redis_url, registry, queue_options=options, start=False) as client:
        r = client.queue.client
        before = str(r.config_get("proto-max-bulk-len")["proto-max-bulk-len"])
        r.config_set("proto-max-bulk-len", str(mib))  # the least Redis allows
        try:
            big = client.enqueue("big", 3 * mib // 2, config)
            smalls = [client.enqueue("big", 10, config) for _ in range(3)]
            client.start()
            for job_id in smalls:
                assert client.wait(job_id, timeout=10).result == "x" * 10
            job = client.wait(big, timeout=10)
            later = client.enqueue("big", 10, config)  # the pool still fetches
            assert client.wait(later, timeout=10).status is jobs.JobStatus.COMPLETED
        finally:
            r.config_set("proto-max-bulk-len", before)
    assert job.status is jobs.JobStatus.FAILED
    assert job.attempts == 1
    assert job.error is not None
    assert job.error.startswith("the handler completed, but its result could not be written")
    assert f"result is {3 * mib // 2 + 2} bytes" in job.error
    assert f"(proto-max-bulk-len {mib})" in job.error


def test_oversized_metadata_is_refused_at_enqueue(redis_url: str) -> None:
    options = {"max_payload_bytes": 100}
    with make_client(redis_url, queue_options=options) as client:
        with pytest.raises(jobs.PayloadError, match=r"metadata is .* over max_payload_bytes"):
            client.enqueue("t", 1, jobs.JobConfig(metadata={"blob": "y" * 200}))
        assert client.stats().total_jobs == 0


def test_a_hook_that_blocks_does_not_hang_stop(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_pool, "HOOKS_GRACE", 0.5)
    release = threading.Event()
    entered = threading.Event()

    def stuck(job: jobs.Job) -> None:
        entered.set()
        release.wait(30)  # a hung HTTP call, say

    registry = jobs.Registry()
    registry.register_func("t", lambda ctx, payload: payload)
    try:
        with make_client(redis_url, registry, success_handler=stuck) as client:
            client.enqueue_many("t", [1, 2, 3])
            assert entered.wait(10)
            stopper = threading.Thread(target=client.stop)
            stopper.start()
            stopper.join(10)
            assert not stopper.is_alive(), "stop() hung on a blocked hook"
    finally:
        release.set()
    assert "success/error hooks still running" in caplog.text
