"""`WorkerEvents`: what a worker pool tells an observer (metrics) about the attempts it runs.

The one instrumentation interface of the worker runtime. The pool calls it from a few
places only, with plain values, and only when `WorkerPoolConfig.events` is set (None,
the default, costs a pool nothing). `jobs.metrics.WorkerMetrics` implements it with
``prometheus_client``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

    from jobs.job import Job


class AttemptResult(enum.StrEnum):
    """How a started attempt ended, as recorded in Redis.

    .. versionadded:: 0.1
    """

    #: The handler returned and its result is stored.
    COMPLETED = "completed"
    #: The attempt failed and the job is failed for good (permanent error, no retry left).
    FAILED = "failed"
    #: The attempt failed and the job is scheduled to run again.
    RETRIED = "retried"


class Interruption(enum.StrEnum):
    """Why the pool stopped working on a job before its handler's outcome was recorded.

    .. versionadded:: 0.1
    """

    #: ``Client.cancel`` reached the running (or fetched) job.
    CANCELLED = "cancelled"
    #: The attempt ran past its timeout (its failure is then recorded as usual: the same
    #: attempt also ends in `AttemptResult.RETRIED` or `AttemptResult.FAILED`).
    TIMED_OUT = "timed_out"
    #: The pool lost the job's lease (it stalled past it); another worker may run it.
    LEASE_LOST = "lease_lost"


class WorkerEvents:
    """Observer of a worker pool's attempts; subclass it and override what you need.

    Pass an instance as `WorkerPoolConfig.events`. Every method is called from a pool
    thread (a handler slot, the writer, the heartbeat or the timeout watchdog), so an
    implementation must be thread-safe and quick: it delays that thread's other work.
    An exception it raises is logged by the pool and otherwise ignored. This base class
    does nothing.

    ``queue`` is the queue's name, ``job_type`` the job's type (``"?"`` for a record
    that does not decode).

    .. versionadded:: 0.1
    """

    def started(self, queue: str, job_type: str, job: Job | None, waited_here: float) -> None:
        """An attempt's handler is about to run.

        Args:
            queue: the queue's name.
            job_type: the job's type.
            job: the job as fetched (``started_at`` is when it was leased, Redis time;
                ``run_at`` when it became due), or None for a record that does not decode.
            waited_here: seconds it then waited in this pool for a free thread (since its
                lease was last confirmed: its fetch, or a later heartbeat).
        """

    def finished(self, queue: str, job_type: str, result: AttemptResult, duration: float) -> None:
        """An attempt's outcome was recorded in Redis.

        Args:
            queue: the queue's name.
            job_type: the job's type.
            result: completed, failed for good, or retried.
            duration: seconds the handler ran (until it returned, or until the attempt
                timed out).
        """

    def interrupted(self, queue: str, job_type: str, why: Interruption) -> None:
        """The pool stopped working on a job: cancelled, timed out, or its lease lost."""

    def write_rejected(self, queue: str, job_type: str) -> None:
        """An outcome was refused by the lease fence: the pool no longer held the job."""


class Guarded(WorkerEvents):
    """Passes events on to ``inner``, logging (not raising) what it raises.

    The pool wraps its observer in it: a broken observer must never fail a job.
    """

    def __init__(self, inner: WorkerEvents, logger: logging.Logger) -> None:
        self._inner = inner
        self._logger = logger

    def _failed(self, event: str, exc: Exception) -> None:
        self._logger.error("worker events observer failed on %s", event, exc_info=exc)

    def started(self, queue: str, job_type: str, job: Job | None, waited_here: float) -> None:
        """See `WorkerEvents.started`."""
        try:
            self._inner.started(queue, job_type, job, waited_here)
        except Exception as exc:
            self._failed("started", exc)

    def finished(self, queue: str, job_type: str, result: AttemptResult, duration: float) -> None:
        """See `WorkerEvents.finished`."""
        try:
            self._inner.finished(queue, job_type, result, duration)
        except Exception as exc:
            self._failed("finished", exc)

    def interrupted(self, queue: str, job_type: str, why: Interruption) -> None:
        """See `WorkerEvents.interrupted`."""
        try:
            self._inner.interrupted(queue, job_type, why)
        except Exception as exc:
            self._failed("interrupted", exc)

    def write_rejected(self, queue: str, job_type: str) -> None:
        """See `WorkerEvents.write_rejected`."""
        try:
            self._inner.write_rejected(queue, job_type)
        except Exception as exc:
            self._failed("write_rejected", exc)
