"""jobs: reliable background jobs for Python on Redis.

Fenced leases (a stalled worker can never overwrite a re-delivered job), retries with
backoff, priorities, delays, cooperative timeouts and cancellation, graceful shutdown
that loses nothing, and a cron scheduler that fires each time exactly once across any
number of processes. Everything public is importable from here; the subpackages are the
parts of the design (`jobs.queue`: Redis; `jobs.worker`: the pool runtime;
`jobs.schedule`: cron; `jobs.cli`: the command line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobs._client_config import ClientConfig, EnqueueHook
from jobs._limits import RateLimit, TypeLimits
from jobs.backoff import Backoff, ExplicitBackoff, ExponentialBackoff, LinearBackoff, NoBackoff
from jobs.client import Client
from jobs.config import DefaultJobConfig, DefaultWorkerPoolConfig, JobConfig, WorkerPoolConfig
from jobs.context import CancellationToken, CancelReason, JobContext
from jobs.errors import (
    ConfigError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobsError,
    JobTimeout,
    LeaseLost,
    PayloadError,
    PermanentError,
    RedisUnavailable,
    ReplicationError,
    UnknownJobType,
    WaitTimeout,
    WorkerShutdown,
)
from jobs.flow import Chain, FlowHandle, Group, Task, chain, group
from jobs.handle import JobHandle
from jobs.job import Job, JobStatus, MinuteCounts, QueueHistory, QueueStats, WorkerInfo
from jobs.job_type import JobType, TypedJobHandle
from jobs.queue._config import RedisQueueConfig
from jobs.queue.redis_queue import RedisQueue
from jobs.registry import Middleware, Registry

if TYPE_CHECKING:
    from jobs.schedule.cron_job import CronJob
    from jobs.schedule.scheduler import Scheduler
    from jobs.schedule.schedules import (
        FRIDAY,
        MONDAY,
        SATURDAY,
        SUNDAY,
        THURSDAY,
        TUESDAY,
        WEDNESDAY,
        Cron,
        Daily,
        Every,
        Monthly,
        RRule,
        Weekly,
    )

#: The scheduler's names, imported on first use (`__getattr__`): with them come
#: python-dateutil's rules and zoneinfo, which a process that schedules nothing (most
#: worker processes, every web process) need not load.
_SCHEDULE = {
    "CronJob": "jobs.schedule.cron_job",
    "Scheduler": "jobs.schedule.scheduler",
    **dict.fromkeys(
        (
            "MONDAY",
            "TUESDAY",
            "WEDNESDAY",
            "THURSDAY",
            "FRIDAY",
            "SATURDAY",
            "SUNDAY",
            "Cron",
            "Daily",
            "Every",
            "Monthly",
            "RRule",
            "Weekly",
        ),
        "jobs.schedule.schedules",
    ),
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above: with a module __getattr__
    # in view they would take any misspelt ``jobs.Name`` for Any instead of an error.

    def __getattr__(name: str) -> Any:
        module = _SCHEDULE.get(name)
        if module is None:
            raise AttributeError(f"module 'jobs' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once: later lookups find it without this hook
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_SCHEDULE})


__version__ = "0.1.0"

__all__ = [
    "FRIDAY",
    "MONDAY",
    "SATURDAY",
    "SUNDAY",
    "THURSDAY",
    "TUESDAY",
    "WEDNESDAY",
    "Backoff",
    "CancelReason",
    "CancellationToken",
    "Chain",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Cron",
    "CronJob",
    "Daily",
    "DefaultJobConfig",
    "DefaultWorkerPoolConfig",
    "EnqueueHook",
    "Every",
    "ExplicitBackoff",
    "ExponentialBackoff",
    "FlowHandle",
    "Group",
    "Job",
    "JobCancelled",
    "JobConfig",
    "JobContext",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobStatus",
    "JobTimeout",
    "JobType",
    "JobsError",
    "LeaseLost",
    "LinearBackoff",
    "Middleware",
    "MinuteCounts",
    "Monthly",
    "NoBackoff",
    "PayloadError",
    "PermanentError",
    "QueueHistory",
    "QueueStats",
    "RRule",
    "RateLimit",
    "RedisQueue",
    "RedisQueueConfig",
    "RedisUnavailable",
    "Registry",
    "ReplicationError",
    "Scheduler",
    "Task",
    "TypeLimits",
    "TypedJobHandle",
    "UnknownJobType",
    "WaitTimeout",
    "Weekly",
    "WorkerInfo",
    "WorkerPoolConfig",
    "WorkerShutdown",
    "__version__",
    "chain",
    "group",
]
