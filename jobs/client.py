"""`Client`: enqueue, track, cancel and count jobs, and run a worker pool."""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import attrs

from jobs import _codec
from jobs import flow as flow_module
from jobs._client_config import ClientConfig
from jobs._validators import require_text, to_seconds
from jobs.config import JobConfig
from jobs.errors import ConfigError, PayloadError, UnknownJobType
from jobs.flow import Chain, Flow, FlowHandle, Group, Task, plan
from jobs.handle import JobHandle
from jobs.job_type import JobType, TypedJobHandle, outcome
from jobs.queue._producer import FlowJob, FlowProfile
from jobs.registry import structure
from jobs.worker._pool import WorkerPool

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType

    from jobs.job import Job, JobStatus, QueueHistory, QueueStats, WorkerInfo
    from jobs.queue.redis_queue import RedisQueue

logger = logging.getLogger("jobs.client")

P = TypeVar("P")
R = TypeVar("R")


_DEFAULT_CONFIG = JobConfig()


def _seconds(timeout: float | timedelta | None) -> float | None:
    return None if timeout is None else to_seconds(timeout)


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

    .. versionadded:: 0.1
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
        """The queue this client works with.

        Typed as the `RedisQueue` it is in production (callers reach Redis through it: the
        CLI, the scheduler, the contrib helpers); a client built on another `JobQueue`
        (a `jobs.testing.MemoryQueue` in tests) returns that queue, which has the
        `JobQueue` methods only.
        """
        return cast("RedisQueue", self.config.queue)

    # -- producing -------------------------------------------------------------------

    @overload
    def enqueue(
        self, job_type: JobType[P, R], payload: P, config: JobConfig | None = None
    ) -> TypedJobHandle[R]: ...

    @overload
    def enqueue(
        self, job_type: str, payload: Any = None, config: JobConfig | None = None
    ) -> JobHandle: ...

    def enqueue(
        self,
        job_type: str | JobType[Any, Any],
        payload: Any = None,
        config: JobConfig | None = None,
    ) -> JobHandle:
        """Enqueue one job and return its id, as a `JobHandle` (a ``str`` that can also wait).

        Args:
            job_type: the handler name to run it with.
            payload: JSON-serializable data, or an attrs instance (stored as its fields).
            config: retries, timeout, priority, delay, metadata; `DefaultJobConfig` if None.

        Raises:
            PayloadError: the payload is not JSON or too large (nothing is written).
            ConfigError: ``job_type`` or ``config`` is invalid, or ``config.depends_on``
                holds a handle from another queue.
            JobNotFound: ``config.depends_on`` names a job that does not exist in this
                queue (nothing is written).
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: ``wait_for_replicas`` is set and too few replicas confirmed
                in time (the job is written on the master).
        """
        if isinstance(job_type, JobType):
            handle = cast("JobHandle", self.enqueue_many(job_type.name, [payload], config)[0])
            return TypedJobHandle(handle.id, self, job_type)
        return cast("JobHandle", self.enqueue_many(job_type, [payload], config)[0])

    def enqueue_many(
        self, job_type: str, payloads: Iterable[Any], config: JobConfig | None = None
    ) -> list[str]:
        """Enqueue many jobs of one type in one round trip; ids in payload order.

        Each id is a `JobHandle` (typed ``str``, so that a ``list[str]`` takes the list).

        Every payload is checked before anything is written: one invalid payload and no
        job is enqueued. The ``before_enqueue`` hooks (`ClientConfig`) run once per call.

        Raises:
            PayloadError: a payload is not JSON or too large (nothing is written).
            ConfigError: ``job_type`` or ``config`` is invalid, or ``config.depends_on``
                holds a handle from another queue.
            JobNotFound: ``config.depends_on`` names a job that does not exist in this
                queue (nothing is written).
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: ``wait_for_replicas`` is set and too few replicas confirmed
                in time (the jobs are written on the master).
        """
        config, handler = self._prepare(job_type, config)
        typed = handler.payload_type if handler is not None else None
        limit = self.queue.max_payload_bytes
        encoded = [
            self._encode(payload, typed, limit, f"payload #{index}")
            for index, payload in enumerate(payloads)
        ]
        if not encoded:
            return []
        ids = new_job_ids(len(encoded))
        ids = self.queue.enqueue(
            job_type,
            ids,
            encoded,
            config,
            # The registry's own declarations are applied: no lookup in Redis.
            declared=handler is None,
            strict=self.config.registry is None and self.config.strict_types,
        )
        logger.debug(
            "enqueued %d %r jobs",
            len(ids),
            job_type,
            extra={"queue": self.queue.name, "job_type": job_type},
        )
        handles: list[str] = [JobHandle(job_id, self) for job_id in ids]
        return handles

    def _prepare(self, job_type: str, config: JobConfig | None) -> tuple[JobConfig, Any]:
        """The config after the hooks and the registry's declarations; the type's handler."""
        require_text("job_type", job_type)
        if config is None:
            config = _DEFAULT_CONFIG
        elif not isinstance(config, JobConfig):
            raise ConfigError(f"config must be a JobConfig, got {type(config).__name__}")
        for hook in self.config.before_enqueue:
            changed = hook(job_type, config)
            if changed is None:
                continue
            if not isinstance(changed, JobConfig):
                raise ConfigError(
                    f"before_enqueue hook {hook!r} returned {type(changed).__name__}, "
                    "not a JobConfig (or None)"
                )
            config = changed
        limit = self.queue.max_payload_bytes
        if config.metadata:
            size = len(_codec.dumps(dict(config.metadata), "metadata"))
            if size > limit:
                raise PayloadError(f"metadata is {size} bytes, over max_payload_bytes ({limit})")
        self._same_queue(config.depends_on)
        registry = self.config.registry
        handler = registry.get(job_type) if registry is not None else None
        if handler is not None:
            config = handler.apply(config)
        elif registry is not None and self.config.strict_types:
            raise UnknownJobType(
                f"job type {job_type!r} is not in this client's registry (strict_types)"
            )
        return config, handler

    def _encode(self, payload: Any, typed: Any, limit: int, what: str) -> bytes:
        if typed is not None and not isinstance(payload, typed):
            # This producer knows the class: a payload that does not fit it fails
            # here, not on a worker after a round trip.
            structure(typed, payload)
        data = _codec.dumps(payload)
        if len(data) > limit:
            raise PayloadError(f"{what} is {len(data)} bytes, over max_payload_bytes ({limit})")
        return data

    def _same_queue(self, job_ids: Iterable[str]) -> None:
        """Refuse a dependency whose handle was enqueued on another queue."""
        here = _queue_identity(self.queue)
        for job_id in job_ids:
            if isinstance(job_id, JobHandle) and _queue_identity(job_id.client.queue) != here:
                raise ConfigError(
                    f"depends_on: job {job_id.id} is on queue "
                    f"{job_id.client.queue.name!r}, this job on {self.queue.name!r}: "
                    "dependencies across queues are not supported"
                )

    def enqueue_flow(self, flow: Flow) -> FlowHandle:
        """Create a group or chain (`jobs.group`, `jobs.chain`) in one atomic call.

        Every job of the flow is written, or none: one Redis script call, however many
        jobs (up to `jobs.flow.MAX_FLOW_JOBS`, payloads adding up to at most
        `jobs.flow.MAX_FLOW_BYTES`). Each task goes through the
        ``before_enqueue`` hooks and the registry's declarations as `enqueue` does.

        Example::

            flow = client.enqueue_flow(
                jobs.group([jobs.Task("resize", {"size": s}) for s in (64, 256)],
                           then=jobs.Task("publish"))
            )
            flow.last.wait()

        Raises:
            PayloadError: a payload is not JSON or too large, or the payloads add up to
                more than `jobs.flow.MAX_FLOW_BYTES` (nothing is written).
            ConfigError: a task or config is invalid, or a dependency is a handle from
                another queue.
            JobNotFound: a task's ``config.depends_on`` names a job that does not exist.
            UnknownJobType: a strict client, and a type nobody declared.
            RedisUnavailable: Redis cannot be reached.

        .. versionadded:: 0.1
        """
        if not isinstance(flow, Task | Chain | Group):
            raise ConfigError(f"flow must be a Task, Chain or Group, got {type(flow).__name__}")
        placed, ends = plan(flow, new_job_id)
        limit = self.queue.max_payload_bytes
        profiles: dict[tuple[str, JobConfig], int] = {}
        specs: list[FlowProfile] = []
        flow_jobs: list[FlowJob] = []
        for index, item in enumerate(placed):
            config, handler = self._prepare(item.task.job_type, item.task.config)
            # Dependencies are per job; the rest of the settings are shared by profile.
            shared = attrs.evolve(
                config,
                depends_on=(),
                depends_on_any_outcome=config.depends_on_any_outcome or item.any_outcome,
            )
            key = (item.task.job_type, shared)
            number = profiles.get(key)
            if number is None:
                number = profiles[key] = len(specs)
                specs.append(
                    FlowProfile(
                        item.task.job_type,
                        shared,
                        declared=handler is None,
                        strict=self.config.registry is None and self.config.strict_types,
                    )
                )
            typed = handler.payload_type if handler is not None else None
            data = self._encode(item.task.payload, typed, limit, f"task #{index} payload")
            flow_jobs.append(FlowJob(item.job_id, number, data, item.depends_on))
        size = sum(len(job.payload) for job in flow_jobs)
        if size > flow_module.MAX_FLOW_BYTES:
            raise PayloadError(
                f"the flow's payloads add up to {size} bytes, over "
                f"{flow_module.MAX_FLOW_BYTES} (one script call writes them all)"
            )
        self.queue.enqueue_flow(specs, flow_jobs)
        logger.debug(
            "enqueued a flow of %d jobs",
            len(flow_jobs),
            extra={"queue": self.queue.name},
        )
        handles = {item.job_id: JobHandle(item.job_id, self) for item in placed}
        return FlowHandle(
            jobs=tuple(handles.values()), ends=tuple(handles[job_id] for job_id in ends)
        )

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


def _queue_identity(queue: Any) -> tuple[str, str]:
    """Where a queue lives: two clients share a queue when these agree."""
    keys = getattr(queue, "keys", None)  # a RedisQueue's key schema; a MemoryQueue has none
    return (queue.address, queue.name if keys is None else keys.base)
