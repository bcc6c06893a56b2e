"""Testing code that enqueues and runs jobs: drain a queue in the test's thread, no worker.

`drain` runs every job that is due, one at a time in the calling thread, through the
same Lua scripts, handler lookup, middleware and outcome rules as a worker pool: a job
is leased by ``fetch.lua``, its handler runs as the pool would run it, and its outcome
is written by ``complete.lua`` or ``fail.lua`` (retries and their backoff, permanent
errors, unknown job types and all). Delays and retry backoffs do not make the test
sleep: when nothing is due, `drain` moves the queue's clock ahead to the next scheduled
job (`advance`). It stops when the queue is empty, and raises `DrainError` when jobs keep
enqueueing jobs past ``max_jobs``. There is no "eager" mode: nothing here runs a job
inside ``enqueue``, so a test sees what production does, JSON round trip included.

The pytest plugin (`jobs.testing.plugin`, loaded by pytest's ``pytest11`` entry point
whenever the package is installed) adds the fixtures: a private ``redis-server`` for the
session and a `TestClient` on a fresh queue for each test. Example::

    def test_signup_sends_a_welcome_email(jobs_client):
        jobs_client.enqueue("signup", {"email": "ada@example.com"})
        ran = jobs_client.drain()
        assert [job.type for job in ran] == ["signup", "send_email"]

What `drain` does not do: enforce ``JobConfig.timeout`` (no watchdog runs, so
``ctx.cancelled`` stays false), run the scheduler's cron jobs, or share a queue with a
worker pool running at the same time.

`MemoryQueue` is `RedisQueue`'s twin in memory, with the scripts' semantics (the model
test checks them against each other) and an injectable clock (`ManualClock`): a `Client`
and its worker pool run on it without a server, single-process, for tests. `drain`
works on it too.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs import _codec
from jobs.client import Client
from jobs.context import CancellationToken, CancelReason, JobContext
from jobs.job import Job, JobStatus
from jobs.testing._drain import DEFAULT_MAX_JOBS, DrainError, advance, drain
from jobs.testing._memory import MemoryQueue
from jobs.testing._memory_base import ManualClock
from jobs.worker import _attempt

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DrainError",
    "ManualClock",
    "MemoryQueue",
    "TestClient",
    "advance",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "enqueued",
    "make_context",
]

logger = logging.getLogger("jobs.testing")

_ANY = object()


def make_context(
    job_type: str = "test",
    payload: Any = None,
    *,
    client: Client | None = None,
    job_id: str | None = None,
    attempts: int = 1,
    max_retries: int = 3,
    metadata: Mapping[str, Any] | None = None,
    token: CancellationToken | None = None,
    cancelled: CancelReason | None = None,
) -> JobContext:
    """A `JobContext` for calling a handler directly in a unit test: ``handler(ctx, payload)``.

    Args:
        job_type: ``ctx.job.type``.
        payload: ``ctx.job.payload``, as a worker would decode it (a JSON round trip;
            pass the same value to the handler).
        client: what `JobContext.enqueue` enqueues with (None: it raises ConfigError).
        job_id: ``ctx.job.id``; a fresh random id by default.
        attempts: ``ctx.job.attempts``, this attempt's number (1-based).
        max_retries: ``ctx.job.max_retries``.
        metadata: ``ctx.job.metadata``.
        token: the cancellation token behind ``ctx.cancelled``; cancel it to see how the
            handler stops (`CancellationToken.cancel`).
        cancelled: start already cancelled with this reason.

    Raises:
        PayloadError: ``payload`` is not JSON.
    """
    now = datetime.now(UTC)
    token = token if token is not None else CancellationToken()
    if cancelled is not None:
        token.cancel(cancelled)
    job = Job(
        id=job_id or secrets.token_hex(16),
        type=job_type,
        payload=_codec.loads(_codec.dumps(payload)),
        status=JobStatus.PROCESSING,
        attempts=attempts,
        max_retries=max_retries,
        created_at=now,
        run_at=now,
        started_at=now,
        metadata=dict(metadata or {}),
        queue=client.queue.name if client is not None else "",
    )
    return JobContext(job, token, _attempt.job_logger, client)


def enqueued(client: Client, job_type: str | None = None) -> list[Job]:
    """The jobs not run yet in the client's queue, of one type or all.

    Pending first, then scheduled, then waiting for their dependencies.
    """
    waiting: list[Job] = []
    for status in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.WAITING):
        offset = 0
        while page := client.list_jobs(status, limit=500, offset=offset):
            waiting += page
            offset += len(page)
    return [job for job in waiting if job_type is None or job.type == job_type]


def _as_json(value: Any) -> Any:
    return json.loads(_codec.dumps(value))


def _matching(client: Client, job_type: str, payload: Any) -> tuple[list[Job], list[Job]]:
    waiting = enqueued(client, job_type)
    if payload is _ANY:
        return waiting, waiting
    expected = _as_json(payload)
    return [job for job in waiting if job.payload == expected], waiting


def assert_enqueued(
    client: Client, job_type: str, payload: Any = _ANY, *, count: int | None = None
) -> Job:
    """Assert that a job of ``job_type`` (with ``payload``, if given) waits in the queue.

    ``payload`` is compared after the JSON round trip a job's payload takes (an attrs
    instance compares as its fields). With ``count``, exactly that many must match.

    Returns:
        The first matching job (pending before scheduled, each in run order).

    Raises:
        AssertionError: none matched (or not ``count``); the message lists what waits.
    """
    found, waiting = _matching(client, job_type, payload)
    wanted = "" if payload is _ANY else f" with payload {_as_json(payload)!r}"
    if not found or (count is not None and len(found) != count):
        seen = [job.payload for job in waiting]
        raise AssertionError(
            f"expected {count if count is not None else 'a'} {job_type!r} job(s){wanted} "
            f"enqueued, found {len(found)}; {job_type!r} payloads waiting: {seen!r}"
        )
    return found[0]


def assert_not_enqueued(client: Client, job_type: str, payload: Any = _ANY) -> None:
    """Assert that no job of ``job_type`` (with ``payload``, if given) waits in the queue.

    Raises:
        AssertionError: one does; the message shows it.
    """
    found, _ = _matching(client, job_type, payload)
    if found:
        raise AssertionError(
            f"expected no {job_type!r} job enqueued, found {len(found)}: "
            f"{[job.payload for job in found]!r}"
        )


class TestClient(Client):
    """A `Client` with the testing helpers as methods (what the ``jobs_client`` fixture gives).

    Example::

        client = jobs.testing.TestClient(jobs.ClientConfig(queue=queue, registry=registry))
        client.enqueue("send_email", {"to": "ada@example.com"})
        assert [job.status for job in client.drain()] == ["completed"]

    .. versionadded:: 0.1
    """

    __test__ = False  # not a pytest test class, whatever a test module imports it as

    def drain(
        self, *, max_jobs: int = DEFAULT_MAX_JOBS, advance_clock: bool = True, reraise: bool = False
    ) -> list[Job]:
        """`drain` this client's queue."""
        return drain(self, max_jobs=max_jobs, advance_clock=advance_clock, reraise=reraise)

    def advance(self, seconds: float | timedelta) -> int:
        """`advance` this client's queue's clock."""
        return advance(self, seconds)

    def enqueued(self, job_type: str | None = None) -> list[Job]:
        """`enqueued` jobs of this client's queue."""
        return enqueued(self, job_type)

    def assert_enqueued(
        self, job_type: str, payload: Any = _ANY, *, count: int | None = None
    ) -> Job:
        """`assert_enqueued` on this client's queue."""
        return assert_enqueued(self, job_type, payload, count=count)

    def assert_not_enqueued(self, job_type: str, payload: Any = _ANY) -> None:
        """`assert_not_enqueued` on this client's queue."""
        assert_not_enqueued(self, job_type, payload)

    def make_context(
        self,
        job_type: str = "test",
        payload: Any = None,
        *,
        attempts: int = 1,
        metadata: Mapping[str, Any] | None = None,
        token: CancellationToken | None = None,
        cancelled: CancelReason | None = None,
    ) -> JobContext:
        """`make_context` whose `JobContext.enqueue` enqueues with this client."""
        return make_context(
            job_type,
            payload,
            client=self,
            attempts=attempts,
            metadata=metadata,
            token=token,
            cancelled=cancelled,
        )
