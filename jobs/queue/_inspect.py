"""Reads about a queue that only monitoring needs (the dashboard, the Prometheus collector)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from jobs import _codec

if TYPE_CHECKING:
    from jobs.queue.redis_queue import RedisQueue


def oldest_pending_age(queue: RedisQueue) -> float | None:
    """Seconds the next job to run has been ready, or None when nothing is pending.

    The pending index is ordered by priority, then FIFO: its head is the oldest job of
    the highest priority waiting, read in O(log N) (a lower-priority job may have waited
    longer behind it).
    """
    client: Any = queue.client
    head = cast("list[Any]", client.zrange(queue.keys.pending, 0, 0))
    if not head:
        return None
    run_at, created_at = client.hmget(
        queue.keys.job(_codec.text(head[0])), ["run_at", "created_at"]
    )
    since = run_at or created_at
    if since is None:
        return None
    return max(0.0, (queue.server_time_ms() - int(since)) / 1000)
