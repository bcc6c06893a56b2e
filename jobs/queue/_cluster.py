"""Running a queue's calls on the Redis Cluster node that serves its slot, across failovers.

Every key of one queue shares one hash slot, so every script call and pipeline of a queue
goes to one node: we send it on that node's own connection rather than through redis-py's
cluster client. Two reasons:

- The cluster client's retry loop is not ours to tune, and it changed under us: from
  redis-py 8.2 a failed command is retried up to 10 times with a backoff of up to 1 s
  each, refreshing the slot map at most once a second, and a pipeline call pinned to a
  node (how we avoid a ``COMMAND GETKEYS`` round trip per call) is retried against the
  same dead node every time. A heartbeat stuck there for 5-10 s lets its leases expire.
- The node clients the cluster client makes never retry by themselves (no re-send of a
  call whose reply was lost), so what is retried, and when, is decided here.

On an error that says the slot map is stale (the node is gone, the slot moved, the
cluster is mid-failover) we refresh the map and try again, briefly: every script of
``jobs/lua`` may run twice safely (writes are fenced by lease tokens, idempotent by job
id, or keyed by a request id that a re-sent call repeats), so a call whose reply was lost
may be re-sent too. After `FAILOVER_WINDOW` seconds the error is raised: worker loops back
off and try again, producers get `RedisUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.cluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

logger = logging.getLogger("jobs.cluster")

#: Errors after which the slot map is stale: refresh it and try again. Not a timeout: a
#: hung node would make each try wait a whole socket timeout.
TOPOLOGY_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
    # A master demoted to replica by a failover answers writes with READONLY.
    ReadOnlyError,
    # No node serves the slot (yet): the map was read mid-failover.
    RedisClusterException,
)
#: How long one call keeps trying through a failover before it raises.
FAILOVER_WINDOW = 5.0
#: Pause after the n-th failed try: FIRST_PAUSE * 2**(n-1), capped at MAX_PAUSE.
FIRST_PAUSE = 0.05
MAX_PAUSE = 0.5
#: Least time between two slot-map refreshes of one client (they are a CLUSTER SLOTS
#: round trip to a seed node, and every thread of a pool fails at once in an outage).
MIN_REFRESH_INTERVAL = 0.1

_refreshed: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_refreshing: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_refresh_lock = threading.Lock()


def node_client(cluster: redis.cluster.RedisCluster, key: str) -> redis.Redis:
    """The client of the node serving ``key``'s slot, per the cluster's current map."""
    untyped: Any = cluster  # redis-py's cluster methods are untyped
    node = untyped.get_node_from_key(key)
    client: redis.Redis = untyped.get_redis_connection(node)
    return client


def run_on_node(
    cluster: redis.cluster.RedisCluster,
    key: str,
    call: Callable[[redis.Redis], T],
    *,
    window: float = FAILOVER_WINDOW,
) -> T:
    """``call(node)`` on the node serving ``key``, through a failover of up to ``window`` s.

    ``call`` must be safe to run twice (see the module docstring).
    """
    deadline = time.monotonic() + window
    tries = 0
    while True:
        tries += 1
        try:
            return call(_node(cluster, key))
        except redis.AuthenticationError:
            raise  # a ConnectionError too, but no refresh will change the password
        except TOPOLOGY_ERRORS:
            pause = min(FIRST_PAUSE * 2 ** (tries - 1), MAX_PAUSE)
            if time.monotonic() + pause > deadline:
                refresh(cluster)  # the next call starts from a fresh map
                raise
            refresh(cluster)
            time.sleep(pause)


def _node(cluster: redis.cluster.RedisCluster, key: str) -> redis.Redis:
    try:
        return node_client(cluster, key)
    except TOPOLOGY_ERRORS:
        raise
    except Exception as exc:
        # The map is being rebuilt by another thread (older redis-py can then raise
        # KeyError or RuntimeError from its lookups): like a stale map, try again.
        raise RedisClusterException(f"no node for the slot yet: {exc!r}") from exc


def refresh(cluster: redis.cluster.RedisCluster) -> None:
    """Re-read the slot map now (at most every `MIN_REFRESH_INTERVAL` per client).

    One thread at a time per client: before 8.x, redis-py's ``initialize`` is not safe to
    run from two threads at once (seen: "dictionary changed size during iteration"). A
    thread that finds a refresh under way does not wait for it: its next try uses the
    map that refresh leaves.
    """
    now = time.monotonic()
    with _refresh_lock:
        if now - _refreshed.get(cluster, -MIN_REFRESH_INTERVAL) < MIN_REFRESH_INTERVAL:
            return
        _refreshed[cluster] = now
        running = _refreshing.setdefault(cluster, threading.Lock())
    if not running.acquire(blocking=False):
        return
    untyped: Any = cluster
    try:
        # A refresh that fails (reaches no node; or redis-py's own error) leaves the old
        # map: the next try fails and asks again. It must never fail the caller's call.
        before = dict(untyped.nodes_manager.nodes_cache)
        untyped.nodes_manager.initialize()
        _close_dropped(before, untyped.nodes_manager.nodes_cache)
    except Exception:
        logger.debug("refreshing the cluster slot map failed", exc_info=True)
    finally:
        running.release()


def _close_dropped(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Close the connections of nodes the new map no longer has (a failed master).

    redis-py before 8 drops them without closing their sockets, which are then found
    open by the garbage collector (a ResourceWarning, seen after failovers on 5.0).
    """
    # (redis-py 8 makes new node objects on each refresh, handing on their clients.)
    kept = {id(getattr(node, "redis_connection", None)) for node in after.values()}
    for name, node in before.items():
        connection = getattr(node, "redis_connection", None)
        if name in after or connection is None or id(connection) in kept:
            continue
        try:
            connection.connection_pool.disconnect()
        except Exception:
            logger.debug("closing a dropped cluster node's connections failed", exc_info=True)
