"""Job settings as script arguments, and what a redis-py client tells about itself.

(The values a worker pool trades with a queue are in `jobs.worker._protocol`.)
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
import redis.sentinel

from jobs import _codec
from jobs._validators import check_name
from jobs.backoff import BUILTIN_BACKOFFS, ExponentialBackoff, backoff_to_spec
from jobs.errors import ConfigError
from jobs.queue import _urls

if TYPE_CHECKING:
    from jobs.config import JobConfig
    from jobs.queue._scripts import Arg, RedisClient


def job_args(config: JobConfig) -> tuple[Arg, ...]:
    """A job's settings as enqueue.lua and cron_fire.lua take them."""
    if isinstance(config.retry_backoff, BUILTIN_BACKOFFS):
        # Producers reuse a handful of configs: encode each once. (A custom backoff is
        # evaluated afresh for every enqueue: it may be random.)
        return _cached_job_args(config)
    return _encode_job_args(config)


@functools.lru_cache(maxsize=256)
def _cached_job_args(config: JobConfig) -> tuple[Arg, ...]:
    return _encode_job_args(config)


def _encode_job_args(config: JobConfig) -> tuple[Arg, ...]:
    return (
        config.priority,
        config.max_retries,
        _codec.to_ms(config.timeout) if config.timeout is not None else "",
        # The default backoff is left out of the record (a missing one means it).
        ""
        if config.retry_backoff == ExponentialBackoff()
        else json.dumps(backoff_to_spec(config.retry_backoff, config.max_retries)),
        _codec.dumps(dict(config.metadata), "metadata"),
        _codec.to_ms(config.delay),
    )


def declared_queue(declaration: str | bytes | None) -> str | None:
    """The queue a job type's published declaration names (its ``q``), if any.

    A declaration that does not parse, or names no valid queue, names none.
    """
    if declaration is None:
        return None
    try:
        settings = json.loads(declaration)
    except ValueError:
        return None
    name = settings.get("q") if isinstance(settings, dict) else None
    try:
        check_name("queue", name)
    except ConfigError:
        return None
    return cast("str", name)


def address(client: RedisClient) -> str:
    """Where a client's Redis is (``host:port``, a socket, a cluster or sentinels), for messages."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # untyped in some redis-py releases, typed in others
        nodes = cast("list[Any]", cluster.get_nodes())
        return ", ".join(f"{n.host}:{n.port}" for n in nodes[:3]) or "a Redis cluster"
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        sentinels = cast("list[redis.Redis]", pool.sentinel_manager.sentinels)
        found = ",".join(address(s) for s in sentinels)
        return f"sentinel service {pool.service_name} via {found}"
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def socket_timeout(client: RedisClient) -> float | None:
    """The client's socket timeout in seconds (None: it waits forever)."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # untyped in some redis-py releases, typed in others
        kwargs = cast("dict[str, Any]", cluster.get_connection_kwargs())
    else:
        kwargs = client.connection_pool.connection_kwargs
    # Absent (a cluster or Sentinel client built without one): redis-py's own default.
    value = kwargs.get("socket_timeout", _urls.DEFAULT_SOCKET_TIMEOUT)
    return None if value is None else float(value)
