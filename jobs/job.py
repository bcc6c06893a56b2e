"""The values callers read back: `Job`, `JobStatus`, `QueueStats`, `QueueHistory`, ...

They are frozen snapshots; how they are stored in Redis lives in `jobs._codec`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime, timedelta


class JobStatus(enum.StrEnum):
    """Where a job is in its life; ``str(JobStatus.COMPLETED) == "completed"``.

    .. versionadded:: 0.1
    """

    #: Ready to run now, waiting for a worker.
    PENDING = "pending"
    #: Waiting for its delay or a retry backoff to pass.
    SCHEDULED = "scheduled"
    #: Waiting for the jobs it depends on (`JobConfig.depends_on`) to complete.
    WAITING = "waiting"
    #: Leased by a worker that is running it.
    PROCESSING = "processing"
    #: Finished successfully; ``result`` holds what the handler returned.
    COMPLETED = "completed"
    #: Retries exhausted, a permanent error, or too many lost leases.
    FAILED = "failed"
    #: Cancelled with ``Client.cancel``.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled: nothing more will happen to the job."""
        return self in _FINAL


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@attrs.frozen(kw_only=True)
class Job:
    """A snapshot of one job, as stored in Redis.

    All datetimes are aware and in UTC (Redis server time), or None.

    Attributes:
        id: the job's id (128 random bits, or deterministic for cron jobs).
        type: the handler name it runs with.
        payload: the JSON payload, as decoded (dicts, lists, str, numbers ...).
        status: see `JobStatus`.
        priority: -1000..1000, higher first.
        attempts: deliveries whose handler started, this one included when read from
            a handler's ``ctx.job``.
        max_retries: retries allowed after the first attempt.
        created_at: when it was enqueued.
        run_at: when it is (or was) due to run.
        started_at: when its latest attempt started.
        completed_at: when it reached a final state (completed, failed or cancelled).
        error: ``"ExcType: message"`` of the last failed attempt, or None; for a job
            cancelled because of a dependency, the reason naming it (``"dependency <id>
            failed"`` or ``"... was cancelled"``).
        traceback: the formatted traceback of the last failed attempt, or None.
        progress: ``(fraction, message)`` as the running attempt last reported it with
            `JobContext.progress` (stored with the pool's heartbeat), or None.
        result: what the handler returned (JSON), for a completed job.
        metadata: the JSON object given in `JobConfig.metadata`.
        timeout: the per-attempt timeout, or None.
        lost_leases: how many times a worker lost this job (died, or paused past its lease).
        queue: the name of the queue it belongs to.
        depends_on: the ids of the jobs it waits (or waited) for, as given in
            `JobConfig.depends_on`: for a group's callback, the group's members.

    .. versionadded:: 0.1
    """

    id: str
    type: str
    payload: Any
    status: JobStatus
    priority: int = 0
    attempts: int = 0
    max_retries: int = 0
    created_at: datetime | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    result: Any = None
    traceback: str | None = None
    progress: tuple[float, str | None] | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    timeout: timedelta | None = None
    lost_leases: int = 0
    queue: str = ""
    depends_on: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class QueueStats:
    """Counts for one queue, read in O(1) whatever the number of jobs.

    Attributes:
        total_jobs: ever enqueued.
        pending_jobs: ready to run (``throttled_jobs`` of them held back).
        scheduled_jobs: waiting for a delay or a retry backoff.
        processing_jobs: leased by a worker.
        completed_jobs: cumulative (expired and purged records stay counted).
        failed_jobs: cumulative; a job `Client.retry` puts back leaves this count.
        cancelled_jobs: cumulative; a job `Client.retry` puts back leaves this count.
        last_processed: when the last job finished (completed, failed or cancelled).
        retried_attempts: failed attempts that were scheduled for a retry.
        lost_leases: leases that expired because a worker died or stalled.
        rejected_writes: late results and errors refused because the writer's lease had
            expired or the job was cancelled (fencing).
        damaged_records: queued ids whose Redis key was not a job record at all (a
            string, a list ... written by hand or by another tool): taken out of their
            index, named in the Redis server's log, the key left as it was.
        waiting_jobs: waiting for the jobs they depend on (`JobConfig.depends_on`).
        throttled_jobs: pending jobs held back by their type's rate limit or
            concurrency cap (`Registry.register`), until it lets them start.

    Each job counts once, where it is or in the final state it last reached:
    ``total_jobs`` is the sum of the seven counts plus the pending, scheduled and
    waiting jobs purged.

    .. versionadded:: 0.1
    """

    total_jobs: int = 0
    pending_jobs: int = 0
    scheduled_jobs: int = 0
    processing_jobs: int = 0
    completed_jobs: int = 0
    failed_jobs: int = 0
    cancelled_jobs: int = 0
    last_processed: datetime | None = None
    retried_attempts: int = 0
    lost_leases: int = 0
    rejected_writes: int = 0
    damaged_records: int = 0
    waiting_jobs: int = 0
    throttled_jobs: int = 0


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """One live worker pool serving a queue, as it last reported itself.

    Attributes:
        id: unique per pool (``hostname:pid:random``).
        hostname: where it runs.
        pid: its process id.
        num_workers: its handler threads.
        in_flight: jobs it holds right now (running or about to).
        started_at: when the pool started.
        last_seen: its last heartbeat.

    .. versionadded:: 0.1
    """

    id: str
    hostname: str
    pid: int
    num_workers: int
    in_flight: int
    started_at: datetime
    last_seen: datetime


@attrs.frozen(kw_only=True)
class MinuteCounts:
    """What happened on one queue during one minute (Redis server clock, UTC).

    Attributes:
        minute: the start of the minute.
        enqueued: new jobs written (retries and re-deliveries are not new jobs).
        completed: jobs that finished successfully.
        failed: jobs that failed for good (retries exhausted or a permanent error).
        cancelled: jobs cancelled.

    .. versionadded:: 0.1
    """

    minute: datetime
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


@attrs.frozen(kw_only=True)
class QueueHistory:
    """Per-minute counts of one queue over a recent window, oldest minute first.

    The last minute is the current one, still in progress. Redis keeps about an hour.

    Attributes:
        minutes: one `MinuteCounts` per minute of the window, with no gaps.

    .. versionadded:: 0.1
    """

    minutes: tuple[MinuteCounts, ...] = ()

    def total(self, field: str) -> int:
        """The sum of one count (``"enqueued"``, ``"completed"``, ...) over the window."""
        return sum(int(getattr(m, field)) for m in self.minutes)

    def per_minute(self, field: str, last: int = 5) -> float:
        """The mean of one count over the ``last`` whole minutes (the current one excluded)."""
        whole = self.minutes[:-1][-last:] if last > 0 else ()
        if not whole:
            return 0.0
        return sum(int(getattr(m, field)) for m in whole) / len(whole)
