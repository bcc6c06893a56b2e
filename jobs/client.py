"""`Client`: enqueue, track, cancel and count jobs, and run a worker pool."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from jobs._client_config import ClientConfig
from jobs._producing import Producing
from jobs._validators import to_seconds
from jobs.config import JobConfig
from jobs.errors import ConfigError
from jobs.job_type import outcome
from jobs.worker._pool import WorkerPool

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType

    from jobs._queue_protocol import JobQueue
    from jobs.job import Job, JobStatus, QueueHistory, QueueStats, WorkerInfo

logger = logging.getLogger("jobs.client")

P = TypeVar("P")
R = TypeVar("R")


_DEFAULT_CONFIG = JobConfig()


def _seconds(timeout: float | timedelta | None) -> float | None:
    return None if timeout is None else to_seconds(timeout)


class Client(Producing):
    """The entry point: a producer of jobs, and optionally a worker pool that runs them.

    Example::

        client = jobs.Client(jobs.ClientConfig(queue=queue, registry=registry))
        job_id = client.enqueue("send_email", {"to": "a@example.com"})
        with client:               # starts the worker pool, stops it gracefully on exit
            ...

    A client without a registry is a producer only: it can enqueue, get, cancel and
    count jobs, but not `start`. Methods are thread-safe.

    .. versionadded:: 0.1
    """

    def __init__(self, config: ClientConfig) -> None:
        if not isinstance(config, ClientConfig):
            raise ConfigError(f"config must be a ClientConfig, got {type(config).__name__}")
        self.config = config
        self._init_producing()
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._stopping: WorkerPool | None = None  # the pool a stop() call is stopping

    def on_queue(self, queue: JobQueue) -> Client:
        """A client with this one's settings, registry and hooks, on ``queue``.

        Its worker pool is its own (not started). `enqueue` makes one per queue that a
        job type is declared on (`Registry.register`'s ``queue``).
        """
        return Client(attrs.evolve(self.config, queue=queue))

    # -- tracking --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job's current state.

        Raises:
            JobNotFound: no such job, or its record expired.
        """
        return self.queue.get(job_id)

    def wait(self, job_id: str, timeout: float | timedelta | None = None) -> Job:
        """Block until the job is final (completed, failed or cancelled) and return it.

        Woken by Redis as the outcome is written (pub/sub), not by polling; a Redis
        outage meanwhile is waited out.

        Raises:
            WaitTimeout: ``timeout`` passed first (also a ``TimeoutError``); the job
                carries on.
            JobNotFound: no such job, or its record expired.
        """
        return next(iter(self.queue.as_finished([job_id], _seconds(timeout))))

    def result(self, job_id: str, timeout: float | timedelta | None = None) -> Any:
        """Block until the job is final and return its result.

        Raises:
            JobFailed: the job failed for good (``.job.error``, ``.job.traceback``).
            JobCancelled: the job was cancelled (``.job`` is its record).
            WaitTimeout: ``timeout`` passed first (also a ``TimeoutError``).
            JobNotFound: no such job, or its record expired.
        """
        return outcome(self.wait(job_id, timeout))

    def wait_all(
        self, job_ids: Iterable[str], timeout: float | timedelta | None = None
    ) -> list[Job]:
        """Block until every job is final; the jobs in the order of ``job_ids``.

        One pub/sub connection serves any number of ids, and records are read in
        batches as their jobs finish.

        Raises:
            WaitTimeout: ``timeout`` passed first; ``.job_ids`` names those not final.
            JobNotFound: one of the jobs does not exist (or its record expired).
        """
        ids = [str(job_id) for job_id in job_ids]
        done = {job.id: job for job in self.queue.as_finished(ids, _seconds(timeout))}
        return [done[job_id] for job_id in ids]

    def as_completed(
        self, job_ids: Iterable[str], timeout: float | timedelta | None = None
    ) -> Iterator[Job]:
        """Yield each job as soon as it is final, in the order they finish.

        Raises (while iterating):
            WaitTimeout: ``timeout`` (for the whole iteration) passed first.
            JobNotFound: one of the jobs does not exist (or its record expired).
        """
        ids = list(dict.fromkeys(str(job_id) for job_id in job_ids))
        return self.queue.as_finished(ids, _seconds(timeout))

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: True if cancelled now, False if it had already finished.

        A pending or scheduled job never runs. A running job is recorded ``cancelled`` at
        once; the handler's token is cancelled within a second on whichever host runs it,
        and whatever it returns is discarded. Cancelled jobs are not retried.

        Raises:
            JobNotFound: no such job, or its record expired.
        """
        return self.queue.cancel(job_id)

    def stats(self) -> QueueStats:
        """The queue's counts, read in O(1) whatever the number of jobs."""
        return self.queue.stats()

    def history(self, minutes: int = 60) -> QueueHistory:
        """Jobs enqueued, completed, failed and cancelled per minute, oldest first.

        Covers the last ``minutes`` minutes (at most 60), the current one last. The
        scripts keep these counts in Redis themselves (one key per minute, expiring after
        an hour), so rates read in O(minutes) with no metrics server.

        Raises:
            ConfigError: ``minutes`` outside 1..60.

        .. versionadded:: 0.1
        """
        return self.queue.history(minutes)

    def workers(self) -> list[WorkerInfo]:
        """The live worker pools of this queue, on any host."""
        return self.queue.workers()

    def list_jobs(self, status: JobStatus | str, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs in one status, ``limit`` at a time from ``offset``.

        Pending and scheduled jobs come in the order they will run, processing jobs by
        lease deadline, completed, failed and cancelled jobs newest first (finished records
        are kept for ``completed_ttl`` / ``failed_ttl``).

        Raises:
            ConfigError: an unknown status, or a negative limit or offset.
        """
        return self.queue.list_jobs(status, limit=limit, offset=offset)

    def retry(self, job_id: str) -> bool:
        """Re-enqueue a failed or cancelled job with a fresh retry budget.

        Returns:
            True if it is pending again; False if it was not failed or cancelled.

        Raises:
            JobNotFound: no such job, or its record expired.
        """
        return self.queue.retry(job_id)

    def retry_failed(
        self, job_type: str | None = None, since: datetime | timedelta | None = None
    ) -> int:
        """Re-enqueue every failed job, or those of ``job_type``, with a fresh retry budget.

        Args:
            job_type: only jobs of this type; every type if None.
            since: only jobs that failed at or after this aware datetime, or within this
                timedelta of now; all of them if None.

        Returns:
            How many jobs are pending again.

        Raises:
            ConfigError: ``since`` is a naive datetime, or neither a datetime nor a timedelta.
        """
        since_ms: int | None = None
        if isinstance(since, datetime):
            if since.tzinfo is None:
                raise ConfigError("since must be an aware datetime (or a timedelta)")
            since_ms = int(since.timestamp() * 1000)
        elif isinstance(since, timedelta):
            since_ms = self.queue.server_time_ms() - int(since.total_seconds() * 1000)
        elif since is not None:
            raise ConfigError(f"since must be a datetime or a timedelta, got {since!r}")
        return self.queue.retry_failed(job_type, since_ms)

    def purge(self, status: JobStatus | str) -> int:
        """Delete every job in ``status`` (any but ``processing``).

        Jobs that wait for a deleted one (`JobConfig.depends_on`) are cancelled, their
        ``error`` naming it (or released, with ``depends_on_any_outcome``).

        Returns:
            How many jobs were deleted.

        Raises:
            ConfigError: an unknown status, or ``processing`` (running jobs are never purged).
        """
        return self.queue.purge(status)

    # -- working ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker pool threads and return at once (a no-op if running).

        Raises:
            ConfigError: the client has no registry.
        """
        if self.config.registry is None:
            raise ConfigError(
                "registry is required to start workers (this client is producer-only)"
            )
        with self._lock:
            if self._pool is not None:
                return
            self._pool = WorkerPool(
                self.queue, self.config.registry, self.config.worker_pool_config, self
            )
            self._pool.start()

    def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop the worker pool gracefully; a no-op if it is not running.

        Fetching stops at once and fetched jobs that have not started go back to the
        queue. Running jobs get up to ``shutdown_timeout`` to finish; the rest have their
        token cancelled with SHUTDOWN and go back to the front of the queue as pending,
        the interrupted attempt not counted. No job is lost.

        Args:
            timeout: wait this long for running jobs instead of ``shutdown_timeout``
                (seconds or timedelta). Called while another thread is inside ``stop()``,
                it shortens that wait and returns at once: the second Ctrl-C of a worker.
        """
        seconds = None if timeout is None else to_seconds(timeout)
        with self._lock:
            pool, self._pool = self._pool, None
            stopping = self._stopping
            if pool is not None:
                self._stopping = pool
        if pool is None:
            if stopping is not None and seconds is not None:
                stopping.hurry(seconds)
            return
        try:
            pool.stop(seconds)
        finally:
            with self._lock:
                if self._stopping is pool:
                    self._stopping = None

    @property
    def running(self) -> bool:
        """Whether the worker pool is running."""
        return self._pool is not None

    def __enter__(self) -> Client:
        if self.config.registry is not None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
