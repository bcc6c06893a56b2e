"""jobs: reliable background jobs for Python on Redis.

Fenced leases (a stalled worker can never overwrite a re-delivered job), retries with
backoff, priorities, delays, cooperative timeouts and cancellation, graceful shutdown
that loses nothing, and a cron scheduler that fires each time exactly once across any
number of processes. Everything public is importable from here.
"""

from __future__ import annotations

# Backoff strategies
from .backoff import Backoff, ExplicitBackoff, ExponentialBackoff, LinearBackoff, NoBackoff

# The client, and the configuration of the client, the queue, the pool and each job
from .client import Client
from .config import (
    ClientConfig,
    DefaultJobConfig,
    DefaultWorkerPoolConfig,
    EnqueueHook,
    JobConfig,
    RedisQueueConfig,
    WorkerPoolConfig,
)

# What a handler gets: its context and its cancellation token
from .context import CancellationToken, CancelReason, JobContext

# Scheduling: a cron job (the scheduler and the schedules are below)
from .cron_job import CronJob

# Errors
from .errors import (
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

# Jobs, their handles, typed job types and the queue's statistics
from .handle import JobHandle
from .job import Job, JobStatus, MinuteCounts, QueueHistory, QueueStats, WorkerInfo
from .job_type import JobType, TypedJobHandle

# The queue in Redis, and the registry of handlers
from .redis_queue import RedisQueue
from .registry import Middleware, Registry

# Scheduling: the scheduler and the schedules
from .scheduler import Scheduler
from .schedules import (
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
    "RedisQueue",
    "RedisQueueConfig",
    "RedisUnavailable",
    "Registry",
    "ReplicationError",
    "Scheduler",
    "TypedJobHandle",
    "UnknownJobType",
    "WaitTimeout",
    "Weekly",
    "WorkerInfo",
    "WorkerPoolConfig",
    "WorkerShutdown",
    "__version__",
]
