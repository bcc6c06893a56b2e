"""The whole exception tree of ``jobs``: every error the library raises derives from `JobsError`.

Each error also derives from the builtin a caller would naturally catch, so that
``except ValueError`` still catches a `ConfigError` and ``except TypeError`` a
`PayloadError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.exceptions

if TYPE_CHECKING:
    from jobs.job import Job


class JobsError(Exception):
    """Root of every exception raised by ``jobs``."""


class ConfigError(JobsError, ValueError):
    """Invalid configuration; the message names the offending field."""


class PayloadError(JobsError, TypeError):
    """A payload, result or cron payload that cannot be stored as JSON (nothing was written)."""


class JobNotFound(JobsError, LookupError):
    """No job with this id exists (it never did, or its record has expired)."""


class UnknownJobType(JobsError):
    """No handler is registered for a job's type; the attempt fails and is retried by policy."""


class RedisUnavailable(JobsError, redis.exceptions.ConnectionError):
    """Redis could not be reached; the message names the server address.

    Also a ``redis.exceptions.ConnectionError``, so code written against redis-py keeps working.
    """


class ReplicationError(JobsError):
    """Fewer replicas than ``wait_for_replicas`` acknowledged a write in time.

    The write itself succeeded on the master (the jobs exist and will run); it is only
    not yet known to be safe from a failover. ``acknowledged`` and ``required`` say how
    many replicas did and should have, ``job_ids`` which jobs were written.
    """

    def __init__(
        self, message: str, *, acknowledged: int, required: int, job_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.required = required
        self.job_ids = job_ids


class JobTimeout(JobsError):
    """The attempt ran past its ``timeout``; raised by `JobContext.raise_if_cancelled`."""


class JobCancelled(JobsError):
    """The job was cancelled with ``Client.cancel``.

    Raised by `JobContext.raise_if_cancelled` inside a handler, and by `Client.result`
    for a cancelled job (then ``job`` is its record; else None).
    """

    def __init__(self, *args: object, job: Job | None = None) -> None:
        super().__init__(*args)
        self.job = job


class LeaseLost(JobCancelled):
    """This worker no longer holds the job's lease (it expired and the job went to another worker).

    A `JobCancelled`, so handlers that stop on cancellation stop on this too.
    """


class WorkerShutdown(JobsError):
    """The pool is stopping and ``shutdown_timeout`` elapsed; the job goes back to the queue."""


class PermanentError(JobsError):
    """Raise from a handler to fail the job at once, without any retry."""


class WaitTimeout(JobsError, TimeoutError):
    """A wait for jobs to finish ran out of time; also the builtin ``TimeoutError``.

    ``job_ids`` names the jobs that were still not final. Nothing happened to them: they
    go on running (or waiting) as before.
    """

    def __init__(self, message: str, *, job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class JobFailed(JobsError):
    """`Client.result` of a job that failed for good; ``job`` is its record.

    The message carries the job's last error; ``job.traceback`` its traceback.
    """

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.type}) failed: {job.error or 'no error recorded'}")
        self.job = job

    def __reduce__(self) -> tuple[type[JobFailed], tuple[Job]]:
        return (type(self), (self.job,))


class CliError(JobsError):
    """A command line failure: ``python -m jobs`` prints its one-line message, exits 1."""


class UsageError(JobsError):
    """A bad command line argument: ``python -m jobs`` prints its message, exits 2."""
