"""`Client`: enqueue, track, cancel and count jobs, and run a worker pool."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

from . import _codec
from ._pool import WorkerPool
from ._validators import require_text, to_seconds
from .config import ClientConfig, JobConfig
from .errors import ConfigError, PayloadError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import timedelta
    from types import TracebackType

    from .job import Job, JobStatus, QueueStats, WorkerInfo
    from .redis_queue import RedisQueue

logger = logging.getLogger("jobs.client")


_DEFAULT_CONFIG = JobConfig()


def new_job_id() -> str:
    """A fresh job id: 128 random bits, hex (unguessable, so ids can be shown to users)."""
    return secrets.token_hex(16)


def new_job_ids(count: int) -> list[str]:
    """``count`` fresh job ids, from one read of the system's random source."""
    pool = secrets.token_hex(16 * count)
    return [pool[i : i + 32] for i in range(0, 32 * count, 32)]


class Client:
    """The entry point: a producer of jobs, and optionally a worker pool that runs them.

    Example::

        client = jobs.Client(jobs.ClientConfig(queue=queue, registry=registry))
        job_id = client.enqueue("send_email", {"to": "a@example.com"})
        with client:               # starts the worker pool, stops it gracefully on exit
            ...

    A client without a registry is a producer only: it can enqueue, get, cancel and
    count jobs, but not `start`. Methods are thread-safe.

    .. versionadded:: 1.0
    """

    def __init__(self, config: ClientConfig) -> None:
        if not isinstance(config, ClientConfig):
            raise ConfigError(f"config must be a ClientConfig, got {type(config).__name__}")
        self.config = config
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._stopping: WorkerPool | None = None  # the pool a stop() call is stopping

    @property
    def queue(self) -> RedisQueue:
        """The queue this client works with."""
        return self.config.queue

    # -- producing -------------------------------------------------------------------

    def enqueue(self, job_type: str, payload: Any = None, config: JobConfig | None = None) -> str:
        """Enqueue one job and return its id.

        Args:
            job_type: the handler name to run it with.
            payload: JSON-serializable data, or an attrs instance (stored as its fields).
            config: retries, timeout, priority, delay, metadata; `DefaultJobConfig` if None.

        Raises:
            PayloadError: the payload is not JSON or too large (nothing is written).
            ConfigError: ``job_type`` or ``config`` is invalid.
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: ``wait_for_replicas`` is set and too few replicas confirmed
                in time (the job is written on the master).
        """
        return self.enqueue_many(job_type, [payload], config)[0]

    def enqueue_many(
        self, job_type: str, payloads: Iterable[Any], config: JobConfig | None = None
    ) -> list[str]:
        """Enqueue many jobs of one type in one round trip; ids in payload order.

        Every payload is checked before anything is written: one invalid payload and no
        job is enqueued.

        Raises:
            PayloadError: a payload is not JSON or too large (nothing is written).
            ConfigError: ``job_type`` or ``config`` is invalid.
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: ``wait_for_replicas`` is set and too few replicas confirmed
                in time (the jobs are written on the master).
        """
        require_text("job_type", job_type)
        if config is None:
            config = _DEFAULT_CONFIG
        elif not isinstance(config, JobConfig):
            raise ConfigError(f"config must be a JobConfig, got {type(config).__name__}")
        limit = self.queue.config.max_payload_bytes
        encoded = []
        for index, payload in enumerate(payloads):
            data = _codec.dumps(payload)
            if len(data) > limit:
                raise PayloadError(
                    f"payload #{index} is {len(data)} bytes, over max_payload_bytes ({limit})"
                )
            encoded.append(data)
        if not encoded:
            return []
        ids = new_job_ids(len(encoded))
        self.queue.enqueue(job_type, ids, encoded, config)
        logger.debug(
            "enqueued %d %r jobs",
            len(ids),
            job_type,
            extra={"queue": self.queue.name, "job_type": job_type},
        )
        return ids

    # -- tracking --------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job's current state.

        Raises:
            JobNotFound: no such job, or its record expired.
        """
        return self.queue.get(job_id)

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

    def purge(self, status: JobStatus | str) -> int:
        """Delete every job in ``status`` (completed, failed, cancelled, pending or scheduled).

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
                self.queue, self.config.registry, self.config.worker_pool_config
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
