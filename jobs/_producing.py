"""Producing jobs: what `Client` does to enqueue one job, many, or a flow."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import attrs

from jobs import _codec
from jobs import flow as flow_module
from jobs._ids import new_job_id, new_job_ids
from jobs._validators import require_text
from jobs.config import JobConfig
from jobs.errors import ConfigError, PayloadError, UnknownJobType
from jobs.flow import Chain, Flow, FlowHandle, Group, Task, plan
from jobs.handle import JobHandle
from jobs.job_type import JobType, TypedJobHandle
from jobs.queue._producer import FlowJob, FlowProfile
from jobs.registry import structure

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from jobs._client_config import ClientConfig
    from jobs.client import Client
    from jobs.queue.redis_queue import RedisQueue

logger = logging.getLogger("jobs.client")

P = TypeVar("P")
R = TypeVar("R")


_DEFAULT_CONFIG = JobConfig()

#: Seconds a producer without the registry trusts what it read of a job type's declared
#: queue: one lookup per type a minute, and a new declaration is followed within one.
ROUTE_TTL = 60.0


def _queue_identity(queue: Any) -> tuple[str, str]:
    """Where a queue lives: two clients share a queue when these agree."""
    keys = getattr(queue, "keys", None)  # a RedisQueue's key schema; a MemoryQueue has none
    return (queue.address, queue.name if keys is None else keys.base)


class Producing:
    """The producer half of `Client`: enqueue, enqueue_many, enqueue_flow."""

    config: ClientConfig

    def _init_producing(self) -> None:
        self._routes_lock = threading.Lock()
        # job type -> (the queue its published declaration names, monotonic expiry)
        self._routes: dict[str, tuple[str | None, float]] = {}
        self._siblings: dict[str, Client] = {}  # a client per declared queue, made once

    def _as_client(self) -> Client:
        # Producing is only ever the base of Client: handles need the whole client.
        return cast("Client", self)

    def _routed(self, job_type: str) -> Client:
        """The client to enqueue ``job_type`` with: this one, or one on its declared queue.

        The registry's declaration when it has the type, else the one a worker pool
        published in this queue (`Registry.register`'s ``queue``).
        """
        registry = self.config.registry
        handler = registry.get(job_type) if registry is not None else None
        name = handler.queue if handler is not None else self._published_queue(job_type)
        if name is None or name == self.queue.name:
            return self._as_client()
        with self._routes_lock:
            sibling = self._siblings.get(name)
            if sibling is None:
                sibling = self._as_client().on_queue(self.queue.sibling(name))
                self._siblings[name] = sibling
        return sibling

    def _published_queue(self, job_type: str) -> str | None:
        now = time.monotonic()
        known = self._routes.get(job_type)
        if known is not None and known[1] > now:
            return known[0]
        name = self.queue.declared_queue(job_type)
        self._routes[job_type] = (name, now + ROUTE_TTL)
        return name

    @property
    def queue(self) -> RedisQueue:
        """The queue this client works with.

        Typed as the `RedisQueue` it is in production (callers reach Redis through it: the
        CLI, the scheduler, the contrib helpers); a client built on another `JobQueue`
        (a `jobs.testing.MemoryQueue` in tests) returns that queue, which has the
        `JobQueue` methods only.
        """
        return cast("RedisQueue", self.config.queue)

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
            return TypedJobHandle(handle.id, self._as_client(), job_type)
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
        require_text("job_type", job_type)  # before the route is looked up in Redis
        routed = self._routed(job_type)
        if routed is not self:
            return routed.enqueue_many(job_type, payloads, config)
        config, handler = self._prepare(job_type, config)
        typed = handler.payload_type if handler is not None else None
        encoded = self._encode_all(list(payloads), typed, self.queue.max_payload_bytes)
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
            fresh=True,  # new_job_ids' own
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "enqueued %d %r jobs",
                len(ids),
                job_type,
                extra={"queue": self.queue.name, "job_type": job_type},
            )
        client = self._as_client()
        return [JobHandle(job_id, client) for job_id in ids]

    def _prepare(self, job_type: str, config: JobConfig | None) -> tuple[JobConfig, Any]:
        """The config after the hooks and the registry's declarations; the type's handler.

        ``job_type`` has been checked (`require_text`) by the caller, before its route.
        """
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

    def _encode_all(self, payloads: list[Any], typed: Any, limit: int) -> list[bytes]:
        """Every payload encoded; the first one that cannot be raised by its index."""
        if typed is None:
            # All at once, C-speed where it can be: a thousand-job call's Python is mostly
            # this. A failure is named by the loop below.
            dumps = _codec.dumps
            try:
                encoded = [dumps(payload) for payload in payloads]
            except PayloadError:
                pass
            else:
                if not encoded or max(map(len, encoded)) <= limit:
                    return encoded
        many = len(payloads) > 1
        return [
            self._encode(payload, typed, limit, f"payload #{index}" if many else "payload")
            for index, payload in enumerate(payloads)
        ]

    def _encode(self, payload: Any, typed: Any, limit: int, what: str) -> bytes:
        if typed is not None and not isinstance(payload, typed):
            # This producer knows the class: a payload that does not fit it fails
            # here, not on a worker after a round trip.
            structure(typed, payload)
        data = _codec.dumps(payload, what)
        if len(data) > limit:
            raise PayloadError(f"{what} is {len(data)} bytes, over max_payload_bytes ({limit})")
        return data

    def _same_queue(self, job_ids: Sequence[str]) -> None:
        """Refuse a dependency whose handle was enqueued on another queue."""
        if not job_ids:
            return
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
            require_text("job_type", item.task.job_type)
            routed = self._routed(item.task.job_type)
            if routed is not self:
                raise ConfigError(
                    f"task #{index}: job type {item.task.job_type!r} is declared on queue "
                    f"{routed.queue.name!r}, and a flow's jobs must all be on one queue "
                    f"(this client's, {self.queue.name!r}): enqueue the flow with a client "
                    "of that queue"
                )
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
        handles = {item.job_id: JobHandle(item.job_id, self._as_client()) for item in placed}
        return FlowHandle(
            jobs=tuple(handles.values()), ends=tuple(handles[job_id] for job_id in ends)
        )
