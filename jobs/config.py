"""Configuration value objects: `JobConfig` and `WorkerPoolConfig`.

(`RedisQueueConfig` is in `jobs.queue`, `ClientConfig`, which holds live objects, in
`jobs._client_config`.) All are frozen attrs classes with keyword-only fields. Durations
accept seconds (int or
float) or a `datetime.timedelta` and are stored as `timedelta`, so
``JobConfig(timeout=600) == JobConfig(timeout=timedelta(minutes=10))``. Invalid values
raise `ConfigError` naming the field, at construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import attrs

from jobs._validators import (
    callable_or_none,
    duration,
    duration_or_zero,
    int_in_range,
    name_like,
    non_negative_duration,
    optional_duration,
    positive_duration,
    require_text,
)
from jobs.backoff import Backoff, ExponentialBackoff
from jobs.errors import ConfigError
from jobs.worker._events import WorkerEvents

if TYPE_CHECKING:
    from jobs.job import Job

#: Highest and lowest job priority; higher runs first.
MAX_PRIORITY = 1000
MIN_PRIORITY = -1000


def _frozen_mapping(value: object) -> Mapping[str, Any]:
    # A read-only copy: the caller's dict can change without changing the config.
    if value is None:
        return MappingProxyType({})
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    return cast("Mapping[str, Any]", value)  # the validator names the field


def _mapping(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field.name} must be a mapping (a JSON object), got {value!r}")


def _backoff(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise ConfigError(f"{field.name} must be a backoff callable(attempt) -> seconds")


def _unique_key(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        require_text(field.name, value)
        if len(cast("str", value)) > MAX_UNIQUE_KEY:
            raise ConfigError(f"{field.name} must be at most {MAX_UNIQUE_KEY} characters")


def _unique_for(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    non_negative_duration(inst, field, value)
    if getattr(inst, "unique_key", None) is None:
        raise ConfigError(f"{field.name} needs unique_key")


def _job_ids(value: object) -> tuple[str, ...]:
    # A tuple, so that configs stay hashable; handles (`JobHandle`, a str) are kept as
    # they are, so that the client can tell which queue each one is on. Order is kept,
    # repeats are dropped.
    if value is None:
        return ()
    if isinstance(value, str):
        return cast("tuple[str, ...]", value)  # the validator names the field
    try:
        return tuple(dict.fromkeys(cast("Sequence[str]", value)))
    except TypeError:
        return cast("tuple[str, ...]", value)


def _job_ids_valid(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(f"{field.name} must be a list of job ids, got {value!r}")
    for job_id in value:
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"{field.name} must hold job ids (non-empty str), got {job_id!r}")


def _any_outcome(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field.name} must be a bool, got {value!r}")


class _DefaultInt(int):
    """An int default that `JobConfig.defaulted` tells apart from the same int given."""

    __slots__ = ()


# The defaults themselves, compared by identity: a field still holding one of these was
# not given, so a job type's declared default (`Registry.job`) may take its place.
_DEFAULT_MAX_RETRIES = _DefaultInt(3)
_DEFAULT_PRIORITY = _DefaultInt(0)
_DEFAULT_TIMEOUT = timedelta(minutes=30)
_DEFAULT_BACKOFF = ExponentialBackoff()

#: The `JobConfig` fields a job type may declare defaults for (`Registry.job`).
DECLARABLE = ("max_retries", "retry_backoff", "timeout", "priority")


#: Longest `JobConfig.unique_key`: it is part of a Redis key name.
MAX_UNIQUE_KEY = 512


@attrs.frozen(kw_only=True)
class JobConfig:
    """How one job runs: retries, backoff, timeout, priority, delay and metadata.

    Example::

        config = jobs.JobConfig(max_retries=5, timeout=600, priority=10, delay=60)
        client.enqueue("send_email", {"to": "a@example.com"}, config=config)

    Args:
        max_retries: retries after the first attempt (so at most ``max_retries + 1``
            attempts); >= 0.
        retry_backoff: delay before the n-th retry, seconds; any ``callable(n)``.
        timeout: per attempt, seconds or timedelta; None for no timeout.
        priority: -1000..1000; higher runs first, FIFO within one priority.
        delay: do not run before now + delay (seconds or timedelta).
        metadata: a JSON object stored with the job.
        unique_key: while a job enqueued with this key is pending, scheduled or running,
            enqueueing another with the same key creates nothing and returns the id of
            the one that exists (per queue; atomic across processes).
        unique_for: also keep the key taken for this long after that job finished
            (completed, failed or cancelled); None or 0: released when it finishes.
        depends_on: ids (or handles) of jobs on the same queue that must complete first.
            The job waits (`JobStatus.WAITING`) and becomes pending the moment the last
            of them completes (its ``delay`` still counts from enqueue). If one fails
            for good or is cancelled, the job is cancelled too, its ``error`` naming
            that dependency, and so are the jobs that wait for it in turn. An unknown or
            expired id is refused with `JobNotFound`; a handle from another queue with
            `ConfigError` (dependencies across queues are not supported).
        depends_on_any_outcome: run once every dependency is final, whatever its
            outcome (completed, failed or cancelled), instead of being cancelled when
            one fails or is cancelled: a clean-up or report job.

    .. versionadded:: 0.1
    """

    max_retries: int = attrs.field(default=_DEFAULT_MAX_RETRIES, validator=int_in_range(0))
    retry_backoff: Backoff = attrs.field(default=_DEFAULT_BACKOFF, validator=_backoff)
    timeout: timedelta | None = attrs.field(
        default=_DEFAULT_TIMEOUT, converter=optional_duration, validator=positive_duration
    )
    priority: int = attrs.field(
        default=_DEFAULT_PRIORITY, validator=int_in_range(MIN_PRIORITY, MAX_PRIORITY)
    )
    delay: timedelta = attrs.field(
        default=timedelta(0),
        converter=duration_or_zero,
        validator=non_negative_duration,
    )
    metadata: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, validator=_mapping, hash=False
    )
    unique_key: str | None = attrs.field(default=None, validator=_unique_key)
    unique_for: timedelta | None = attrs.field(
        default=None, converter=optional_duration, validator=_unique_for
    )
    depends_on: tuple[str, ...] = attrs.field(
        default=(), converter=_job_ids, validator=_job_ids_valid
    )
    depends_on_any_outcome: bool = attrs.field(default=False, validator=_any_outcome)

    def defaulted(self) -> frozenset[str]:
        """The declarable fields left at the library's default (not given explicitly).

        A job type's declared defaults (`Registry.job`) fill exactly these: an explicit
        value wins field by field, even one equal to the library default.
        """
        left = set()
        if type(self.max_retries) is _DefaultInt:
            left.add("max_retries")
        if self.retry_backoff is _DEFAULT_BACKOFF:
            left.add("retry_backoff")
        if self.timeout is _DEFAULT_TIMEOUT:
            left.add("timeout")
        if type(self.priority) is _DefaultInt:
            left.add("priority")
        return frozenset(left)


def DefaultJobConfig() -> JobConfig:
    """The default job configuration: 3 retries, exponential backoff, 30 min timeout, priority 0.

    .. versionadded:: 0.1
    """
    return JobConfig()


ErrorHandler = Callable[["Job", BaseException], object]
SuccessHandler = Callable[["Job"], object]


def _queue_spec(value: Sequence[str] | Mapping[str, int] | None) -> tuple[tuple[str, int], ...]:
    # Strict order as weight 0; the validator checks names and weights.
    if value is None:
        return ()
    if isinstance(value, Mapping):
        for weight in value.values():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ConfigError(f"queues weights must be integers >= 1, got {dict(value)!r}")
        return tuple((name, weight) for name, weight in value.items())
    if isinstance(value, str):
        return cast("tuple[tuple[str, int], ...]", value)  # the validator names the field
    try:
        items = tuple(value)
    except TypeError:
        return cast("tuple[tuple[str, int], ...]", value)
    if all(isinstance(item, tuple) and len(item) == 2 for item in items):
        return cast("tuple[tuple[str, int], ...]", items)  # already normalized
    return tuple((name, 0) for name in items)


def _queue_spec_valid(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(
            f"{field.name} must be a list of queue names or a mapping of name to weight, "
            f"got {value!r}"
        )
    names = [name for name, _ in value]
    for name in names:
        name_like(inst, field, name)
    if len(set(names)) != len(names):
        raise ConfigError(f"{field.name} names a queue twice: {names!r}")


def _events_or_none(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, WorkerEvents):
        raise ConfigError(
            f"{field.name} must be a jobs.worker.WorkerEvents or None, got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class WorkerPoolConfig:
    """How a client's worker pool runs jobs.

    Args:
        num_workers: concurrent handler threads (>= 1).
        lease: seconds a fetched job stays leased without a heartbeat; heartbeats renew it
            every lease/3. A worker that dies loses its jobs to other workers about
            1.5 x lease after its last heartbeat.
        poll_interval: the longest idle wait, seconds; a job that becomes ready wakes an
            idle pool at once.
        shutdown_timeout: seconds `Client.stop` waits for running jobs before cancelling
            them with SHUTDOWN and returning them to the queue.
        shutdown_grace: seconds `Client.stop` then waits for the handlers it cancelled to
            return (their cleanup: a rollback, closing a file), so that it does not
            return while they still run; a handler that ignores its token is left
            running after that. A second ``stop(timeout=0)`` cuts it short.
        queues: the queues this pool serves, by name, on the client's Redis and prefix:
            a list is served in strict order (a job of an earlier queue always goes
            first), a mapping ``{name: weight}`` in proportion to the weights. Empty
            (the default): the client's queue, and those the registry's job types are
            declared on (`Registry.register`'s ``queue``), in equal shares.
        prefetch: jobs fetched ahead of the free slots, so that a thread that ends a job
            starts the next at once instead of waiting for a round trip to Redis. None
            (the default): ``8 * num_workers``, at most 64 and no more than the threads
            get through in 25 ms at their measured pace, while the queue has a backlog
            and the pool's jobs take under 50 ms on average (`jobs.worker._core.SHORT_JOB`,
            `jobs.worker._core.PREFETCH_PER_THREAD`, `jobs.worker._core.PREFETCH_MOST`,
            `jobs.worker._core.BUFFER_WAIT`); else none:
            longer jobs, and a job that comes to an idle queue, are better left in the
            queue for any free thread of any pool to take. 0 never fetches ahead.
            A job of higher priority enqueued after lower ones were fetched still goes
            first: the pool looks at the queue every 0.1 s while jobs wait in its buffer,
            and hands back those a better ready job outranks.
        error_handler: ``f(job, exc)`` after each failed attempt, once it is recorded.
        success_handler: ``f(job)`` after each completed job, once it is recorded.
        events: a `jobs.worker.WorkerEvents` told of every attempt's start and end,
            cancellations, timeouts, lost leases and refused writes (for metrics:
            `jobs.metrics.WorkerMetrics`); None (the default) tells nobody.

    .. versionadded:: 0.1
    """

    num_workers: int = attrs.field(default=10, validator=int_in_range(1))
    lease: timedelta = attrs.field(
        default=timedelta(seconds=30), converter=duration, validator=positive_duration
    )
    poll_interval: timedelta = attrs.field(
        default=timedelta(seconds=1), converter=duration, validator=positive_duration
    )
    shutdown_timeout: timedelta = attrs.field(
        default=timedelta(seconds=30), converter=duration, validator=non_negative_duration
    )
    shutdown_grace: timedelta = attrs.field(
        default=timedelta(seconds=5), converter=duration, validator=non_negative_duration
    )
    queues: tuple[tuple[str, int], ...] = attrs.field(
        default=(), converter=_queue_spec, validator=_queue_spec_valid
    )
    prefetch: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(int_in_range(0))
    )
    error_handler: ErrorHandler | None = attrs.field(default=None, validator=callable_or_none)
    success_handler: SuccessHandler | None = attrs.field(default=None, validator=callable_or_none)
    events: WorkerEvents | None = attrs.field(default=None, validator=_events_or_none)


def DefaultWorkerPoolConfig() -> WorkerPoolConfig:
    """The default worker pool configuration: 10 workers, 30 s lease, 1 s poll, 30 s shutdown.

    .. versionadded:: 0.1
    """
    return WorkerPoolConfig()
