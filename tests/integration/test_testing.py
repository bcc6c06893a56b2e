"""`jobs.testing`: drain a queue in the test's thread, a clock the test moves, assertions.

The last tests run a user's project (a conftest.py and a test file) with pytest in a
subprocess, the plugin loaded as pytest loads it: by its ``pytest11`` entry point when
the package is installed (tox), else with ``-p jobs.testing.plugin``.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import jobs
from jobs import testing
from tests.helpers import plugin_args
from tests.integration._clients import unique_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytest_plugins = ("pytester",)

A_DAY = timedelta(days=1)


@pytest.fixture
def client_with(redis_url: str) -> Iterator[Callable[..., testing.TestClient]]:
    """``make(registry, **WorkerPoolConfig fields)``: a TestClient on a fresh queue."""
    queues: list[jobs.RedisQueue] = []

    def make(registry: jobs.Registry, **pool: Any) -> testing.TestClient:
        queue = jobs.RedisQueue.from_url(redis_url, name=unique_name())
        queues.append(queue)
        config = jobs.ClientConfig(
            queue=queue, registry=registry, worker_pool_config=jobs.WorkerPoolConfig(**pool)
        )
        return testing.TestClient(config)

    yield make
    for queue in queues:
        queue.close()


@attrs.frozen
class Signup:
    email: str


def test_drain_runs_follow_ups_delays_and_retries_without_waiting(
    client_with: Callable[..., testing.TestClient],
) -> None:
    registry = jobs.Registry()
    attempts: list[int] = []

    @registry.job("signup", payload_type=Signup)
    def signup(ctx: jobs.JobContext, payload: Signup) -> str:
        hourly = jobs.ExplicitBackoff([3600, 7200])
        ctx.enqueue(
            "welcome", {"to": payload.email}, jobs.JobConfig(delay=A_DAY, retry_backoff=hourly)
        )
        return payload.email

    @registry.job("welcome")
    def welcome(ctx: jobs.JobContext, payload: dict[str, str]) -> str:
        attempts.append(ctx.job.attempts)
        if ctx.job.attempts < 3:
            raise ConnectionError("smtp down")
        return f"sent to {payload['to']}"

    client = client_with(registry)
    job_id = client.enqueue("signup", Signup("ada@example.com"))
    ran = client.drain()
    # A day's delay and two retries an hour and two hours apart: no sleeping, and the
    # pytest timeout (60 s) says so.
    assert [(job.type, job.status, job.attempts) for job in ran] == [
        ("signup", "completed", 1),
        ("welcome", "scheduled", 1),
        ("welcome", "scheduled", 2),
        ("welcome", "completed", 3),
    ]
    assert ran[0].id == job_id
    assert ran[1].error == "ConnectionError: smtp down"
    assert ran[-1].result == "sent to ada@example.com"
    assert attempts == [1, 2, 3]
    assert client.drain() == []
    stats = client.stats()
    assert (stats.completed_jobs, stats.pending_jobs, stats.scheduled_jobs) == (2, 0, 0)


def test_drain_records_failures_as_a_pool_does_and_calls_the_hooks(
    client_with: Callable[..., testing.TestClient],
) -> None:
    registry = jobs.Registry()

    @registry.job("permanent")
    def permanent(ctx: jobs.JobContext, payload: None) -> None:
        raise jobs.PermanentError("bad card")

    hooks: list[tuple[str, str]] = []
    client = client_with(
        registry,
        error_handler=lambda job, exc: hooks.append((job.type, repr(exc))),
        success_handler=lambda job: hooks.append((job.type, job.status)),
    )
    client.enqueue("permanent")
    client.enqueue("nobody", config=jobs.JobConfig(max_retries=1))
    ran = client.drain()
    assert [(job.type, job.status) for job in ran] == [
        ("permanent", "failed"),
        ("nobody", "scheduled"),
        ("nobody", "failed"),
    ]
    assert ran[-1].error == "no handler registered for job type 'nobody'"
    assert hooks[0] == ("permanent", "PermanentError('bad card')")
    assert [kind for kind, _ in hooks] == ["permanent", "nobody", "nobody"]


def test_drain_can_reraise_the_handlers_exception(
    client_with: Callable[..., testing.TestClient],
) -> None:
    registry = jobs.Registry()
    registry.register_func("boom", lambda ctx, payload: 1 / 0)
    client = client_with(registry)
    job_id = client.enqueue("boom", config=jobs.JobConfig(max_retries=0))
    with pytest.raises(ZeroDivisionError):
        client.drain(reraise=True)
    assert client.get(job_id).status is jobs.JobStatus.FAILED  # recorded first


def test_drain_stops_jobs_that_keep_enqueueing_jobs(
    client_with: Callable[..., testing.TestClient],
) -> None:
    registry = jobs.Registry()

    @registry.job("again")
    def again(ctx: jobs.JobContext, payload: int) -> None:
        ctx.enqueue("again", payload + 1)

    client = client_with(registry)
    client.enqueue("again", 0)
    with pytest.raises(testing.DrainError, match=r"max_jobs.*last types: again") as raised:
        client.drain(max_jobs=25)
    assert isinstance(raised.value, AssertionError)
    assert [job.payload for job in raised.value.ran] == list(range(25))
    # The job it would have run next is back in the queue, not held.
    client.assert_enqueued("again", 25, count=1)
    assert client.stats().processing_jobs == 0


def test_the_clock_only_moves_when_told(client_with: Callable[..., testing.TestClient]) -> None:
    registry = jobs.Registry()
    registry.register_func("later", lambda ctx, payload: payload)
    client = client_with(registry)
    job_id = client.enqueue("later", "x", jobs.JobConfig(delay=60))
    before = client.get(job_id).run_at
    assert client.drain(advance_clock=False) == []
    assert client.advance(59) == 1
    assert client.drain(advance_clock=False) == []
    after = client.get(job_id).run_at
    assert before is not None and after is not None
    assert before - after == timedelta(seconds=59)
    client.advance(timedelta(seconds=1))
    assert [job.id for job in client.drain(advance_clock=False)] == [job_id]
    with pytest.raises(jobs.ConfigError, match=">= 0"):
        client.advance(-1)


def test_assertion_helpers(client_with: Callable[..., testing.TestClient]) -> None:
    client = client_with(jobs.Registry())
    client.enqueue("email", {"to": "a"})
    client.enqueue("email", {"to": "b"}, jobs.JobConfig(delay=60))
    client.enqueue("email", Signup("c"))
    assert client.assert_enqueued("email", {"to": "b"}).status is jobs.JobStatus.SCHEDULED
    client.assert_enqueued("email", Signup("c"))  # compared as its JSON fields
    client.assert_enqueued("email", count=3)
    client.assert_not_enqueued("sms")
    client.assert_not_enqueued("email", {"to": "z"})
    assert [job.payload for job in client.enqueued("email")] == [
        {"to": "a"},
        {"email": "c"},
        {"to": "b"},
    ]
    with pytest.raises(AssertionError, match=r"expected a 'email' job\(s\) with payload"):
        testing.assert_enqueued(client, "email", {"to": "z"})
    with pytest.raises(AssertionError, match="found 3"):
        testing.assert_enqueued(client, "email", count=2)
    with pytest.raises(AssertionError, match="expected no 'email' job enqueued, found 1"):
        testing.assert_not_enqueued(client, "email", {"to": "a"})


def test_make_context_calls_a_handler_directly(
    client_with: Callable[..., testing.TestClient],
) -> None:
    def export(ctx: jobs.JobContext, payload: dict[str, Any]) -> int:
        done = 0
        for _ in range(payload["chunks"]):
            if ctx.cancelled:
                break
            done += 1
        ctx.enqueue("notify", {"done": done})
        return done

    client = client_with(jobs.Registry())
    ctx = client.make_context("export", {"chunks": 3}, attempts=2, metadata={"user": 1})
    assert (ctx.job.type, ctx.job.attempts, ctx.job.metadata) == ("export", 2, {"user": 1})
    assert export(ctx, ctx.job.payload) == 3
    client.assert_enqueued("notify", {"done": 3})

    stopped = client.make_context("export", cancelled=jobs.CancelReason.SHUTDOWN)
    assert export(stopped, {"chunks": 3}) == 0
    with pytest.raises(jobs.WorkerShutdown):
        stopped.raise_if_cancelled()

    bare = testing.make_context("export", {"chunks": 1})
    with pytest.raises(jobs.ConfigError, match="no client"):
        export(bare, bare.job.payload)
    with pytest.raises(jobs.PayloadError):
        testing.make_context("export", object())


def test_drain_needs_a_registry(redis_url: str) -> None:
    queue = jobs.RedisQueue.from_url(redis_url, name=unique_name())
    try:
        with pytest.raises(jobs.ConfigError, match="registry"):
            testing.drain(jobs.Client(jobs.ClientConfig(queue=queue)))
    finally:
        queue.close()


# -- the plugin, in a user's project ---------------------------------------------------

USER_CONFTEST = """
    import pytest

    import jobs

    registry = jobs.Registry()


    @registry.job("signup")
    def signup(ctx, payload):
        ctx.enqueue("send_email", {"to": payload["email"]})
        return payload["email"]


    @registry.job("send_email")
    def send_email(ctx, payload):
        if ctx.job.attempts == 1:
            raise ConnectionError("smtp down")
        return {"sent_to": payload["to"]}


    @pytest.fixture
    def jobs_registry():
        return registry
"""

USER_TESTS = """
    import pytest

    import jobs
    import jobs.testing


    def test_signup_sends_a_welcome_email(jobs_client):
        jobs_client.enqueue("signup", {"email": "ada@example.com"})
        ran = jobs_client.drain()
        assert [(job.type, job.status) for job in ran] == [
            ("signup", "completed"),
            ("send_email", "scheduled"),
            ("send_email", "completed"),
        ]
        assert ran[-1].result == {"sent_to": "ada@example.com"}


    def test_each_test_gets_a_fresh_queue(jobs_client):
        assert jobs_client.stats().total_jobs == 0
        jobs_client.enqueue("signup", {"email": "x"}, jobs.JobConfig(delay=60))
        jobs_client.assert_enqueued("signup", {"email": "x"})


    def test_a_loop_of_jobs_fails_the_test(jobs_client, jobs_registry):
        jobs_registry.register_func("again", lambda ctx, n: ctx.enqueue("again", n + 1))
        jobs_client.enqueue("again", 0)
        with pytest.raises(jobs.testing.DrainError):
            jobs_client.drain(max_jobs=10)


    def test_the_server_is_private(jobs_redis_url, jobs_redis_server):
        assert jobs_redis_url.startswith("redis://127.0.0.1:")
        assert jobs_redis_server.port != 6379
"""


@pytest.mark.timeout(120)
def test_the_plugin_in_a_users_project(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(USER_CONFTEST))
    pytester.makepyfile(test_signup=textwrap.dedent(USER_TESTS))
    result = pytester.runpytest_subprocess(*plugin_args(), "-v")
    result.assert_outcomes(passed=4)
    # The session's one server is gone with the session.
    result.stdout.no_fnmatch_line("*ResourceWarning*")


@pytest.mark.timeout(120)
def test_the_plugin_starts_no_server_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import jobs.testing

        def test_plain():
            assert jobs.testing.TestClient.__test__ is False
        """
    )
    result = pytester.runpytest_subprocess(*plugin_args(), "--fixtures")
    result.stdout.fnmatch_lines(["*jobs_redis_server*", "*jobs_client*"])
    result = pytester.runpytest_subprocess(*plugin_args())
    result.assert_outcomes(passed=1)
