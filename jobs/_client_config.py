"""`ClientConfig`: the live objects a `Client` works with (queue, registry, hooks).

Kept apart from the value configurations in `jobs.config`: it holds a queue and a
registry, so it sits above them in the import graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import attrs

from jobs._queue_protocol import JobQueue
from jobs._validators import (
    instance_of,
)
from jobs.config import JobConfig, WorkerPoolConfig
from jobs.errors import ConfigError
from jobs.registry import Registry


def _pool_config(value: WorkerPoolConfig | None) -> WorkerPoolConfig:
    return WorkerPoolConfig() if value is None else value


#: ``hook(job_type, config) -> config``: run by `Client.enqueue` before anything is
#: written; returns the `JobConfig` to enqueue with (None: ``config`` unchanged).
EnqueueHook = Callable[[str, JobConfig], JobConfig | None]


def _hooks(value: object) -> tuple[EnqueueHook, ...]:
    if callable(value):
        return (cast("EnqueueHook", value),)
    if isinstance(value, list | tuple):
        return tuple(value)
    return cast("tuple[EnqueueHook, ...]", value)  # the validator names the field


def _all_callable(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(callable(hook) for hook in value):
        raise ConfigError(f"{field.name} must be a sequence of callables, got {value!r}")


def _job_queue(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, JobQueue):
        raise ConfigError(
            f"{field.name} must be a RedisQueue (or another JobQueue, such as "
            f"jobs.testing.MemoryQueue), got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class ClientConfig:
    """What a `Client` works with: its queue, its handlers and its worker pool.

    Args:
        queue: the queue to enqueue to and work from: a `RedisQueue`, or any `JobQueue`
            (in tests, a `jobs.testing.MemoryQueue`).
        registry: the job handlers; a producer-only client needs none.
        worker_pool_config: how `Client.start` runs the pool.
        strict_types: refuse to enqueue a job type nobody handles, with `UnknownJobType`
            and nothing written: one not in ``registry``, or, for a client without one,
            one that no worker pool of the queue declared (pools publish their registry's
            types as they start). Off by default: a queue may carry types another fleet
            handles.
        before_enqueue: hooks ``hook(job_type, config) -> JobConfig | None`` run, in
            order, by every `Client.enqueue` and `Client.enqueue_many` before anything is
            written, each given the config the previous one returned (the caller's, or
            `DefaultJobConfig`, first); None keeps it. Use them to add metadata (a
            request id, a trace context) to every job. An exception a hook raises comes
            out of the enqueue, and nothing is written. Cron fires do not run them.

    .. versionadded:: 0.1
    """

    queue: JobQueue = attrs.field(validator=_job_queue)
    registry: Registry | None = attrs.field(
        default=None, validator=instance_of(Registry, optional=True)
    )
    worker_pool_config: WorkerPoolConfig = attrs.field(
        factory=WorkerPoolConfig,
        converter=_pool_config,
        validator=instance_of(WorkerPoolConfig),
    )
    strict_types: bool = attrs.field(default=False, validator=instance_of(bool))
    before_enqueue: tuple[EnqueueHook, ...] = attrs.field(
        default=(), converter=_hooks, validator=_all_callable
    )
