"""`Attempt`: one run of a `Leased` job in this pool (decode, run, decide its `Outcome`).

Nothing here touches the queue or threads; the pool decides where the outcome goes.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
import traceback
from typing import TYPE_CHECKING, Any

import attrs

from jobs import _codec, _record
from jobs.backoff import ExponentialBackoff, backoff_from_spec
from jobs.context import CancellationToken, JobContext
from jobs.errors import ConfigError, PayloadError, PermanentError, UnknownJobType
from jobs.job import Job, JobStatus
from jobs.worker._protocol import Completed, Failed, Leased, Outcome

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobs.client import Client
    from jobs.registry import Registry
    from jobs.worker._protocol import WorkerQueue

job_logger = logging.getLogger("jobs.job")

#: The longest retry delay, seconds (a century): a backoff asking for more gets this.
MAX_RETRY_DELAY_S = 100 * 365.25 * 86400


class State(enum.Enum):
    """Where an attempt is inside the pool."""

    QUEUED = "queued"  # fetched, waiting for a free slot
    RUNNING = "running"  # its handler is running in a slot
    FINISHED = "finished"  # the handler returned; its outcome waits to be written
    ABANDONED = "abandoned"  # timed out, cancelled, lost or shut down: any late result is discarded
    DONE = "done"  # written (or given up on); the pool no longer holds it


@attrs.define(eq=False)
class Attempt:
    """One run of a leased job inside the pool, from fetch until its outcome is written."""

    queue: WorkerQueue
    leased: Leased
    job: Job | None  # None when the record did not decode
    corrupt: str | None  # why it did not decode
    fields: Mapping[str, Any]
    #: Until when (time.monotonic) the lease is known to hold; extended by heartbeats.
    lease_until: float
    token: CancellationToken = attrs.field(factory=CancellationToken)
    state: State = State.QUEUED
    started: float = 0.0
    #: When (time.monotonic) its handler returned or it timed out; 0.0 until then.
    ended: float = 0.0
    #: When (time.monotonic) the running attempt times out; inf without a timeout.
    deadline: float = math.inf
    #: Progress the handler reported since the last heartbeat took it (JSON), or None.
    progress: str | None = None
    #: What it decided, once decided (then it goes to the outbox).
    outcome: Outcome | None = None
    #: The job's priority (0 for a corrupt record: it only fails, at once).
    priority: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.priority = self.job.priority if self.job else 0

    def report_progress(self, fraction: float, message: str | None) -> None:
        """Keep the handler's latest progress for the next heartbeat to store."""
        self.progress = json.dumps([fraction, message])

    def take_progress(self) -> str:
        """The progress to send with this beat ('' for none), forgetting it."""
        progress, self.progress = self.progress, None
        return progress or ""

    @classmethod
    def from_leased(cls, leased: Leased, queue: WorkerQueue, lease_until: float) -> Attempt:
        """Decode a fetched record; a corrupt one becomes an attempt that fails permanently."""
        try:
            job = _record.decode_job(leased.fields, queue.name)
        except _codec.CorruptRecord as exc:
            return cls(queue, leased, None, str(exc), leased.fields, lease_until)
        except BaseException as exc:  # anything else is the record's fault too: it fails alone
            corrupt = f"job record does not decode: {_codec.describe(exc)}"
            return cls(queue, leased, None, corrupt, leased.fields, lease_until)
        return cls(queue, leased, job, None, leased.fields, lease_until)

    @property
    def key(self) -> tuple[str, str]:
        """What the pool files it under: its queue and job id."""
        return self.queue.name, self.leased.job_id

    @property
    def job_type(self) -> str:
        """The job's type, even for a corrupt record (for logs)."""
        return self.job.type if self.job else _codec.text(self.fields.get("type", "?"))

    @property
    def number(self) -> int:
        """This attempt's number (1-based)."""
        return self.job.attempts if self.job else 0

    def log_extra(self) -> dict[str, object]:
        """The structured logging fields for this attempt."""
        return {
            "job_id": self.leased.job_id,
            "job_type": self.job_type,
            "attempt": self.number,
            "queue": self.queue.name,
        }

    @property
    def duration(self) -> float:
        """Seconds its handler ran (0.0 if it never started)."""
        return self.ended - self.started if self.started and self.ended else 0.0


def retry_delay_ms(attempt: Attempt) -> int:
    """Milliseconds before the retry this failure would schedule (the job's own backoff).

    Never raises: a backoff that cannot be rebuilt or computed (a damaged record) is
    logged and replaced by the default's first delay, and the delay is clamped to
    ``[0, MAX_RETRY_DELAY]``, so that the failure is always recorded.
    """
    fields = attempt.fields
    try:
        retry_number = int(fields.get("failures") or 0) + 1
        if retry_number > int(fields.get("max_retries") or 0):
            return 0  # no retry left: fail.lua fails it for good
        spec = json.loads(fields.get("backoff") or "{}")
        backoff = backoff_from_spec(spec) if spec else ExponentialBackoff()
        seconds = backoff(retry_number)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or math.isnan(seconds):
            raise ConfigError(f"it returned {seconds!r} for retry {retry_number}")
    except BaseException as exc:  # whatever it is, the failure must still be recorded
        seconds = ExponentialBackoff()(1)
        job_logger.warning(
            "job %s: its retry backoff is unusable (%s); retrying in %g s",
            attempt.leased.job_id,
            _codec.describe(exc),
            seconds,
            extra=attempt.log_extra(),
        )
    # Past a century a retry means "never" anyway; clamping keeps run_at a valid date.
    return round(min(max(seconds, 0.0), MAX_RETRY_DELAY_S) * 1000)


def fail(
    attempt: Attempt, exc: BaseException, *, permanent: bool, error: str | None = None
) -> Failed:
    """The outcome for a failed attempt: retried with the job's backoff, or permanent.

    Its texts are made writable (`_codec.storable`): an error naming a file whose name
    is not UTF-8 must be recorded like any other.
    """
    try:
        trace = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
    except Exception as inner:  # an exception graph that traceback cannot walk
        trace = f"<no traceback: formatting it raised {_codec.describe(inner)}>"
    text = error if error is not None else _codec.describe(exc)
    return Failed(
        attempt.leased,
        error=_codec.bounded(_codec.storable(text), _codec.MAX_ERROR_CHARS),
        traceback=_codec.bounded(_codec.storable(trace), _codec.MAX_TRACEBACK_CHARS),
        delay_ms=0 if permanent else retry_delay_ms(attempt),
        permanent=permanent,
        exc=exc,
    )


def unwritable(attempt: Attempt, outcome: Outcome, exc: BaseException) -> Failed:
    """What to record instead of an outcome that could not be written: a failure saying why.

    A failed attempt keeps its retry decision (only its text was at fault); a completed
    one fails for good (its handler ran; only its result cannot be stored). The texts are
    plain ASCII, so that this one can be written.
    """
    why = _codec.describe(exc)
    if isinstance(outcome, Completed):
        error = f"the handler completed, but its result could not be written: {why}"
        delay_ms, permanent = 0, True
        cause: BaseException | None = exc
    else:
        error = f"{outcome.error} (writing this error as is raised {why})"
        delay_ms, permanent = outcome.delay_ms, outcome.permanent
        cause = outcome.exc
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:  # as in `fail`
        trace = ""
    return Failed(
        attempt.leased,
        error=_codec.bounded(_codec.ascii_text(error), _codec.MAX_ERROR_CHARS),
        traceback=_codec.bounded(_codec.ascii_text(trace), _codec.MAX_TRACEBACK_CHARS),
        delay_ms=delay_ms,
        permanent=permanent,
        exc=cause,
    )


def run(attempt: Attempt, registry: Registry, client: Client | None = None) -> Outcome:
    """Run the attempt's handler in this thread and return what to record.

    ``client`` is the one whose pool runs it (`JobContext.enqueue` enqueues with it).

    The handler runs inside the registry's middleware (`Registry.add_middleware`).
    Every error becomes a failed outcome: in the handler or a middleware (retried by
    policy, or not for `PermanentError`), building its payload (permanent: the same
    payload never fits), or encoding its result.
    """
    job = attempt.job
    if job is None:
        return fail(
            attempt, _codec.CorruptRecord(attempt.corrupt or "corrupt record"), permanent=True
        )
    handler = registry.get(job.type)
    if handler is None:
        message = f"no handler registered for job type '{job.type}'"
        return fail(attempt, UnknownJobType(message), permanent=False, error=message)
    try:
        payload = handler.payload(job.payload)
    except BaseException as exc:  # a PayloadError, or whatever the payload class raised
        return fail(attempt, exc, permanent=True)  # the same payload will never fit
    attempt.started = time.monotonic()
    ctx = JobContext(job, attempt.token, job_logger, client, report=attempt.report_progress)
    try:
        value = registry.call(handler, ctx, payload)
    except PermanentError as exc:
        return fail(attempt, exc, permanent=True)
    except BaseException as exc:  # a handler's SystemExit must not kill the slot either
        return fail(attempt, exc, permanent=False)
    # A result that cannot be stored fails the job for good: the handler ran, so a retry
    # would repeat its side effects only to fail the same way.
    try:
        data = _codec.dumps(value, "result")
    except BaseException as exc:  # a PayloadError, or an attrs result whose fields raised
        return fail(attempt, exc, permanent=True)
    limit = attempt.queue.max_result_bytes
    if len(data) > limit:
        too_big = PayloadError(f"result is {len(data)} bytes, over max_result_bytes ({limit})")
        return fail(attempt, too_big, permanent=True)
    return Completed(attempt.leased, data, value)


def recorded_job(
    attempt: Attempt, outcome: Outcome, status: str, now_ms: int, run_at_ms: int
) -> Job:
    """The job as it now stands in the queue, for the success and error hooks."""
    assert attempt.job is not None
    now = _codec.from_ms(now_ms)
    if isinstance(outcome, Completed):
        return attrs.evolve(
            attempt.job, status=JobStatus.COMPLETED, result=outcome.value, completed_at=now
        )
    job_status = JobStatus(status)
    return attrs.evolve(
        attempt.job,
        status=job_status,
        error=outcome.error,
        completed_at=now if job_status.is_final else None,
        run_at=_codec.from_ms(run_at_ms) if run_at_ms else attempt.job.run_at,
    )
