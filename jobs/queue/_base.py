"""The core of `RedisQueue`: its client, key schema and scripts.

Also the one place where a lost or refused connection becomes `RedisUnavailable`.
"""

from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING, Any, Self, cast

import redis
import redis.cluster
import redis.sentinel

from jobs import _codec
from jobs.errors import (
    ConfigError,
    ReplicationError,
)
from jobs.queue import _urls
from jobs.queue._config import RedisQueueConfig
from jobs.queue._keys import QueueKeys
from jobs.queue._packed import PackedCalls
from jobs.queue._scripts import Arg, RedisClient, Script, execute, execute_and_wait, scripts
from jobs.queue._unavailable import AsUnavailable
from jobs.queue._wire import (
    address,
    socket_timeout,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobs.queue._waiter import FinishedListener

#: Due jobs promoted from the scheduled set per fetch; the rest follow on the next fetch.
PROMOTE_BATCH = 1000
#: Expired leases handled per reap call.
REAP_BATCH = 500
#: Jobs per enqueue script call in `RedisQueue.enqueue`; chunks share one round trip.
ENQUEUE_CHUNK = 1000
#: enqueue.lua's letter for each declarable `JobConfig` setting.
_LETTERS = {"priority": "p", "max_retries": "r", "timeout": "t", "retry_backoff": "b"}
#: Completed records over `max_completed_jobs` deleted per reap (every heartbeat): a
#: busy queue's excess goes at up to this many per beat, each beat a short script.
COMPLETED_TRIM = 500
#: About what one finished job's record costs Redis (measured: 680 bytes, small payload).
RECORD_BYTES = 700
#: Records read per round trip by `RedisQueue.get_many` (and so by waits on many jobs).
GET_BATCH = 500
#: Failed jobs read per page by `RedisQueue.retry_failed`.
RETRY_BATCH = 500
#: retry.lua calls `RedisQueue.retry_failed` sends per round trip. Redis runs all the
#: commands of one read from a socket before it serves anyone else: a few dozen calls
#: (under 1 ms of its time) keep other clients' waits short, however many jobs there are.
RETRY_CALLS = 32
#: How much longer than its leases a fetch's record lives (ms): a copy of the fetch that
#: arrives just as they run out still finds it.
FETCH_RECORD_MARGIN_MS = 1000
#: How long cancel and retry remember their answer (ms): far longer than redis-py takes
#: to send a command again (10 tries, each at most a socket timeout plus 1 s of backoff).
ANSWER_TTL_MS = 600_000


def new_request_id() -> str:
    """A fresh request id (64 random bits): the key to a request's idempotency record."""
    return secrets.token_hex(8)


#: Encoded payload bytes per enqueue script call (a single larger payload goes alone).
#: A script blocks every other client of the server while it runs and holds all its
#: arguments in memory twice (the command, Lua's ARGV): 1,000 payloads of 256 KiB in one
#: call blocked Redis for 1.2 s and doubled its peak memory.
ENQUEUE_CHUNK_BYTES = 1 << 20


def enqueue_chunks(
    sizes: Sequence[int], max_jobs: int = ENQUEUE_CHUNK, max_bytes: int = ENQUEUE_CHUNK_BYTES
) -> list[range]:
    """Split jobs into consecutive index ranges, one per enqueue script call.

    Each range holds at most ``max_jobs`` jobs whose payloads (``sizes``, in bytes) add
    up to at most ``max_bytes``, except that every range holds at least one job.
    """
    if 0 < len(sizes) <= max_jobs and sum(sizes) <= max_bytes:
        return [range(len(sizes))]  # the common case, without a Python loop over the jobs
    chunks: list[range] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_jobs or total + size > max_bytes):
            chunks.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def _wrong_type(exc: Exception) -> bool:
    """Whether Redis refused a command because the key holds another type (WRONGTYPE)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


#: Minutes of per-minute history Redis keeps (HISTORY_MINUTES in _lib.lua, plus the
#: current minute).
HISTORY_MINUTES = 60
_HISTORY_FIELDS = ("enqueued", "completed", "failed", "cancelled")


def _row(reply: Any) -> list[Any]:
    return [None] * len(_HISTORY_FIELDS) if isinstance(reply, Exception) else list(reply)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class QueueBase:
    """What every part of `RedisQueue` shares: the client, the keys, the scripts."""

    def __init__(self, config: RedisQueueConfig) -> None:
        self.config = config
        self.client: RedisClient = config.client
        self.keys = QueueKeys.for_queue(config.prefix, config.name)
        self._scripts = scripts()
        self._packed_calls = PackedCalls.shared(self.client)
        self._as_unavailable = AsUnavailable(self.client, any_error=False)
        self._any_as_unavailable = AsUnavailable(self.client, any_error=True)
        # (job type, id(config), declared, strict, fresh) -> (config, argument count, packed)
        self._packed_heads: dict[tuple[str, int, bool, bool, bool], tuple[Any, int, bytes]] = {}
        self._owns_client = False
        self._connection: _urls.Connection | None = None
        self._completed_ttl_ms = _codec.to_ms(config.completed_ttl)
        self._failed_ttl_ms = _codec.to_ms(config.failed_ttl)
        self._wait_ms = _codec.to_ms(config.wait_timeout)
        self._listener: FinishedListener | None = None
        self._listener_lock = threading.Lock()
        # Queues made by `sibling`: they share this queue's client, and close with it.
        self._siblings: list[QueueBase] = []
        #: The server's proto-max-bulk-len as last read, and when to read it again.
        self._bulk_limit: int | None = None
        self._bulk_limit_due = 0.0
        if config.wait_for_replicas:
            limit = socket_timeout(self.client)
            if limit is not None and config.wait_timeout.total_seconds() >= limit:
                raise ConfigError(
                    f"wait_timeout must be below the client's socket timeout ({limit} s), "
                    f"got {config.wait_timeout.total_seconds()} s"
                )

    @classmethod
    def from_url(
        cls, url: str, name: str = "default", *, prefix: str = "jobs", **options: Any
    ) -> Self:
        """A queue on the Redis at ``url``.

        Schemes: ``redis://``, ``rediss://`` and ``unix://`` for one server;
        ``redis+sentinel://host:port,host:port/service/db`` for the master of a
        Sentinel-monitored service (followed across failovers);
        ``redis+cluster://host:port,host:port`` for a Redis Cluster. ``rediss+...``
        uses TLS; see `jobs.queue._urls` for the options.

        The queue owns the client it creates: `close` closes it. Other keyword arguments
        are `RedisQueueConfig` fields (``max_lost_leases``, ``completed_ttl`` ...).

        Raises:
            ConfigError: a malformed URL or an unknown URL option.
        """
        connection = _urls.connect(url)
        try:
            queue = cls(
                RedisQueueConfig(client=connection.client, name=name, prefix=prefix, **options)
            )
        except BaseException:
            connection.close()
            raise
        queue._owns_client = True
        queue._connection = connection
        return queue

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.config.name

    @property
    def max_payload_bytes(self) -> int:
        """The largest encoded payload `Client.enqueue` accepts (`RedisQueueConfig`)."""
        return self.config.max_payload_bytes

    @property
    def address(self) -> str:
        """Where the queue's Redis is (``host:port``), for messages."""
        return address(self.client)

    def close(self) -> None:
        """Stop the wait listener; close the Redis client if this queue created it (`from_url`)."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
            siblings, self._siblings = self._siblings, []
        if listener is not None:
            listener.stop()
        for sibling in siblings:
            sibling.close()
        if self._connection is not None:
            self._connection.close()
        elif self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"<RedisQueue {self.name!r} prefix={self.config.prefix!r} at {self.address}>"

    def config_get(self, pattern: str) -> dict[str, str]:
        """CONFIG GET ``pattern`` on the server that holds this queue's keys.

        Raises:
            redis.RedisError: refused (an ACL without ``+config|get``, a managed Redis
                that renamed CONFIG), or Redis unreachable.
        """
        if isinstance(self.client, redis.cluster.RedisCluster):
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.pending)
            raw = cluster.config_get(pattern, target_nodes=node)
        else:
            raw = self.client.config_get(pattern)
        return {_codec.text(k): _codec.text(v) for k, v in cast("dict[Any, Any]", raw).items()}

    def _unavailable_as_error(self) -> AsUnavailable:
        """Within it, a lost connection or refused credentials raise `RedisUnavailable`."""
        return self._as_unavailable

    def _any_error_as_unavailable(self) -> AsUnavailable:
        """Within it, every Redis error but NOPERM raises `RedisUnavailable`: the worker side.

        See `AsUnavailable`.
        """
        return self._any_as_unavailable

    def _execute_durably(
        self,
        calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
        ids: Sequence[str],
        wrote: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """Run producer writes; with ``wait_for_replicas``, WAIT for them in the same trip.

        ``wrote(replies)`` tells whether the calls wrote anything (default: yes); a call
        that wrote nothing has nothing to lose.

        Raises:
            ReplicationError: fewer replicas acknowledged than required (but the writes
                are done on the master).
        """
        wanted = self.config.wait_for_replicas
        if not wanted:
            return execute(self.client, calls)
        replies, acked = execute_and_wait(self.client, calls, wanted, self._wait_ms)
        if acked < wanted and (wrote is None or wrote(replies)):
            first = f"job {ids[0]}" if len(ids) == 1 else f"{len(ids)} jobs (first {ids[0]})"
            raise ReplicationError(
                f"{first} written on the master at {self._master_address()}, but only {acked} of "
                f"{wanted} replicas acknowledged within {self._wait_ms} ms: a failover "
                f"now could lose the write",
                acknowledged=acked,
                required=wanted,
                job_ids=tuple(ids),
            )
        return replies

    def _master_address(self) -> str:
        if isinstance(self.client, redis.cluster.RedisCluster):
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.pending)
            return f"{node.host}:{node.port}"
        return self.address
