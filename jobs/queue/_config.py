"""`RedisQueueConfig`: where and how a queue lives in Redis."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import redis
import redis.cluster

from jobs._limits import RateLimit, concurrency_limits, rate_limits
from jobs._validators import (
    duration,
    int_in_range,
    name_like,
    positive_duration,
)
from jobs.errors import ConfigError


def _redis_client(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, redis.Redis | redis.cluster.RedisCluster):
        raise ConfigError(
            f"{field.name} must be a redis.Redis or redis.cluster.RedisCluster, "
            f"got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class RedisQueueConfig:
    """Where and how a queue lives in Redis.

    All keys of one queue share the hash tag ``{prefix:name}``: the queue lives in one
    Redis Cluster slot, and different queues spread over the cluster.

    Args:
        client: a ``redis.Redis`` or ``redis.cluster.RedisCluster``.
        name: the queue's name; several queues may share one Redis.
        prefix: key namespace; tenants with different prefixes never see each other.
        max_lost_leases: a job whose lease expires (its worker died) this many times
            fails with "lease expired (worker lost)" instead of being re-delivered.
        completed_ttl: how long a completed job's record is kept.
        failed_ttl: how long failed and cancelled jobs' records are kept.
        max_failed_jobs: at most this many failed (and, separately, cancelled) records
            are kept; the oldest are dropped first.
        max_completed_jobs: at most this many completed records are kept: the oldest
            are dropped as jobs complete (and by the workers' heartbeats, up to
            `COMPLETED_TRIM` per beat, after the bound was lowered); 0 keeps every
            record for its ``completed_ttl``. A dropped job is gone: `Client.get` and
            `Client.wait` find nothing. At roughly 700 bytes a record, the default
            100,000 is about 70 MB.
        max_payload_bytes: the largest encoded payload `Client.enqueue` accepts, and the
            largest encoded ``JobConfig.metadata``.
        max_result_bytes: the largest encoded result stored; a handler returning more
            fails its job for good ("result is N bytes, over max_result_bytes"): keep
            large results elsewhere and return where they are. Raised above the
            server's ``proto-max-bulk-len``, a result longer than that fails for good too.
        wait_for_replicas: when > 0, enqueues (and cron fires) also wait, in the same
            round trip, until this many replicas have acknowledged the write (Redis
            ``WAIT``), and raise `ReplicationError` when fewer did within
            ``wait_timeout``. Replication is asynchronous, so without it a failover can
            lose a job whose enqueue had already returned; 0 (the default) does not wait.
        wait_timeout: how long an enqueue waits for those replicas, seconds or
            timedelta; it must stay below the client's socket timeout.
        rate_limits: job type -> rate limit (``"5/s"``, ``"10/m"``, ``"100/h"``) on this
            queue, replacing the one the type declares (`Registry.register`'s
            ``rate_limit``); None: no rate limit on this queue.
        concurrency_limits: job type -> the most jobs of the type running at once on
            this queue, across every pool, replacing the declared ``max_concurrency``;
            None: no cap on this queue.

    Flow limits are published by every worker pool that starts on the queue (its
    declarations with this queue's overrides applied: the last pool to start wins), or
    set with `RedisQueue.set_limits`; the fetch script enforces them.

    .. versionadded:: 0.1
    """

    client: redis.Redis | redis.cluster.RedisCluster = attrs.field(validator=_redis_client)
    name: str = attrs.field(default="default", validator=name_like)
    prefix: str = attrs.field(default="jobs", validator=name_like)
    max_lost_leases: int = attrs.field(default=5, validator=int_in_range(1))
    completed_ttl: timedelta = attrs.field(
        default=timedelta(days=1), converter=duration, validator=positive_duration
    )
    failed_ttl: timedelta = attrs.field(
        default=timedelta(days=7), converter=duration, validator=positive_duration
    )
    max_failed_jobs: int = attrs.field(default=10_000, validator=int_in_range(1))
    max_completed_jobs: int = attrs.field(default=100_000, validator=int_in_range(0))
    max_payload_bytes: int = attrs.field(default=1 << 20, validator=int_in_range(1))
    max_result_bytes: int = attrs.field(default=1 << 20, validator=int_in_range(1))
    wait_for_replicas: int = attrs.field(default=0, validator=int_in_range(0))
    wait_timeout: timedelta = attrs.field(
        default=timedelta(seconds=1), converter=duration, validator=positive_duration
    )
    rate_limits: dict[str, RateLimit | None] = attrs.field(
        factory=dict, converter=rate_limits, hash=False
    )
    concurrency_limits: dict[str, int | None] = attrs.field(
        factory=dict, converter=concurrency_limits, hash=False
    )
