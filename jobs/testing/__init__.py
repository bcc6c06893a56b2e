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
import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs import _codec
from jobs._validators import to_seconds
from jobs.client import Client
from jobs.context import CancellationToken, CancelReason, JobContext
from jobs.errors import ConfigError, JobNotFound, JobsError
from jobs.job import Job, JobStatus
from jobs.queue._scripts import scripts
from jobs.testing._memory import MemoryQueue
from jobs.testing._memory_base import ManualClock
from jobs.worker import _attempt
from jobs.worker._attempt import Attempt
from jobs.worker._protocol import Completed, Failed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobs.registry import Registry
    from jobs.worker._protocol import Outcome

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

#: The lease `drain` takes each job with: far longer than any test, so that nothing in
#: Redis takes the job back while its handler runs in the test's thread.
DRAIN_LEASE = timedelta(hours=1)

#: Jobs `drain` runs before it gives up (`DrainError`), unless told otherwise.
DEFAULT_MAX_JOBS = 1000

_ANY = object()


class DrainError(JobsError, AssertionError):
    """`drain` ran ``max_jobs`` jobs and the queue was still not empty.

    Jobs that keep enqueueing jobs (or a job that keeps failing with retries left)
    would loop for ever; the test fails instead. ``ran`` holds what ran.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, ran: list[Job]) -> None:
        super().__init__(message)
        #: The jobs that ran, in order, as recorded after each attempt.
        self.ran = ran


def _registry(client: Client) -> Registry:
    registry = client.config.registry
    if registry is None:
        raise ConfigError("drain needs a client with a registry (the handlers to run)")
    return registry


def advance(client: Client, seconds: float | timedelta) -> int:
    """Move the queue's clock ahead: every scheduled job becomes due ``seconds`` earlier.

    Delayed jobs and retries waiting out their backoff are moved, and rate limits'
    clocks with them; nothing runs (call `drain` for that). Job timestamps other than
    ``run_at`` are left as they were.

    Returns:
        How many scheduled jobs moved.

    Raises:
        ConfigError: a negative duration (the clock never goes back).
    """
    ms = _codec.to_ms(timedelta(seconds=to_seconds(seconds)))
    if ms < 0:
        raise ConfigError(f"advance needs a duration >= 0, got {seconds!r}")
    queue: object = client.config.queue
    if isinstance(queue, MemoryQueue):
        return queue.advance_scheduled(timedelta(milliseconds=ms))
    redis_queue = client.queue
    keys = redis_queue.keys
    return int(scripts().advance(redis_queue.client, (keys.scheduled,), (keys.job_prefix, ms)))


def drain(
    client: Client,
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    advance_clock: bool = True,
    reraise: bool = False,
) -> list[Job]:
    """Run every due job of the client's queue in this thread until none is left.

    Each job is leased, run (handler inside the registry's middleware, with a
    `JobContext` whose `JobContext.enqueue` enqueues with ``client``) and its outcome
    written, exactly as a worker pool would; the pool's ``success_handler`` and
    ``error_handler`` (``client``'s `WorkerPoolConfig`) are called here, in order (an
    exception they raise comes out of ``drain``, where a pool would log it). A job
    that a handler enqueues runs in the same drain. When nothing is due but jobs are
    scheduled (a delay, a retry backoff) or held back by a rate limit, the clock moves
    ahead to the earliest one (`advance`) and the drain goes on. The registry's rate
    limits and concurrency caps are published first, as a worker pool does.

    Args:
        client: a client with a registry, on the queue to drain (no worker pool may be
            running on that queue meanwhile).
        max_jobs: raise `DrainError` rather than run more jobs than this.
        advance_clock: False runs only the jobs due now; scheduled ones stay.
        reraise: raise a handler's (or middleware's) exception out of ``drain`` once
            its failure is recorded, instead of going on: the test shows its traceback.

    Returns:
        One `Job` per attempt that ran, in order, as recorded right after it (a job that
        was retried appears once per attempt).

    Raises:
        DrainError: ``max_jobs`` jobs ran and more were due.
        ConfigError: the client has no registry.
    """
    registry = _registry(client)
    queue = client.queue
    # As a pool starting on the queue would: its types' rate limits and caps apply.
    queue.publish_limits(registry.limits())
    ran: list[Job] = []
    while True:
        fetched = queue.fetch(1, DRAIN_LEASE)
        if not fetched.jobs:
            if fetched.next_due_ms is None or not advance_clock:
                return ran
            advance(client, timedelta(milliseconds=max(fetched.next_due_ms - fetched.now_ms, 1)))
            continue
        leased = fetched.jobs[0]
        if len(ran) >= max_jobs:
            queue.requeue([leased])
            kinds = sorted({job.type for job in ran[-20:]})
            raise DrainError(
                f"drain ran {max_jobs} jobs (max_jobs) and the queue is still not empty: "
                f"jobs keep enqueueing jobs, or keep failing and retrying (last types: "
                f"{', '.join(kinds)})",
                ran,
            )
        attempt = Attempt.from_leased(leased, queue, math.inf)
        outcome = _attempt.run(attempt, registry, client)
        job = _write(client, attempt, outcome)
        ran.append(job)
        _call_hook(client, job, outcome)
        if reraise and isinstance(outcome, Failed) and outcome.exc is not None:
            raise outcome.exc


def _write(client: Client, attempt: Attempt, outcome: Outcome) -> Job:
    """Record the outcome as the pool's writer would; the job as it now stands."""
    queue = client.queue
    try:
        queue.write([outcome])
    except JobsError:
        raise
    except Exception as exc:  # an outcome that does not encode: recorded as the pool does
        queue.write([_attempt.unwritable(attempt, outcome, exc)])
    try:
        return queue.get(attempt.leased.job_id)
    except JobNotFound:  # purged by its own handler, say: what was written is all we know
        now = queue.server_time_ms()
        status = "completed" if isinstance(outcome, Completed) else "failed"
        if attempt.job is None:
            raise
        return _attempt.recorded_job(attempt, outcome, status, now, 0)


def _call_hook(client: Client, job: Job, outcome: Outcome) -> None:
    pool = client.config.worker_pool_config
    if isinstance(outcome, Completed):
        if pool.success_handler is not None:
            pool.success_handler(job)
    elif pool.error_handler is not None and outcome.exc is not None:
        pool.error_handler(job, outcome.exc)


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
