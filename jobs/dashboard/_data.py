"""What the dashboard reads from and does to Redis, with a bounded cost per page.

Every read here is O(1) or O(page) in Redis: counts come from the stats script, rates
from the per-minute history (`RedisQueue.history`), lists from ZRANGE windows of a
status index. Filtering by type or error text reads a bounded window of records per
page and says how far it got, never the whole index.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import attrs
import redis
import redis.cluster

from jobs import _codec
from jobs._client_config import ClientConfig
from jobs.client import Client
from jobs.errors import ConfigError
from jobs.queue._config import RedisQueueConfig
from jobs.queue._inspect import oldest_pending_age
from jobs.queue.redis_queue import RedisQueue

if TYPE_CHECKING:
    from jobs.job import Job, JobStatus, QueueHistory, QueueStats, WorkerInfo
    from jobs.queue._scripts import RedisClient

#: Jobs per page of a list.
PAGE_SIZE = 50
#: Records read at most to fill one page of a filtered list (by type or error text).
FILTER_WINDOW = 1000
#: Records read per round trip while filtering.
FILTER_CHUNK = 200
#: SCAN calls at most per queue discovery, and how long a discovery is reused (seconds).
DISCOVERY_SCANS = 200
DISCOVERY_TTL = 30.0
#: Queues shown at most (each costs a few round trips on the overview).
MAX_QUEUES = 100

# A job in a final state is removed from its index and deleted in one step, so that a
# concurrent retry (which moves it out of the index first) cannot leave half of it.
_DELETE_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' then
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif status == 'failed' then
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif status == 'cancelled' then
  redis.call('ZREM', KEYS[4], ARGV[1])
else
  return status and 0 or -1
end
redis.call('DEL', KEYS[1])
return 1
"""


@attrs.frozen(kw_only=True)
class QueueSummary:
    """One queue's overview: counts, rates and the age of the head of its line."""

    name: str
    stats: QueueStats
    history: QueueHistory
    oldest_pending_age: float | None
    workers: int


@attrs.frozen(kw_only=True)
class JobPage:
    """One page of a job list.

    ``next_start`` is the index rank to continue from (None at the end); ``scanned`` how
    many index entries this page read, ``total`` how many the index holds.
    """

    jobs: tuple[Job, ...]
    start: int
    next_start: int | None
    scanned: int
    total: int
    filtered: bool


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class Store:
    """The dashboard's view of every queue under one prefix of one Redis."""

    def __init__(
        self, client: RedisClient, prefix: str = "jobs", queues: list[str] | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._fixed = list(queues) if queues is not None else None
        self._lock = threading.Lock()
        self._queues: dict[str, RedisQueue] = {}
        self._found: tuple[float, list[str]] | None = None

    def queue_names(self) -> list[str]:
        """The queues under the prefix: those given, else found by a bounded SCAN (cached)."""
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            if self._found is not None and time.monotonic() - self._found[0] < DISCOVERY_TTL:
                return self._found[1]
        head, tail = "{" + self.prefix + ":", "}:stats"
        match = _glob_escape(head) + "*" + tail
        names: set[str] = set()
        for node in self._nodes():
            cursor: Any = 0
            for _ in range(DISCOVERY_SCANS):
                cursor, keys = node.scan(cursor=cursor, match=match, count=1000)
                names.update(_codec.text(k)[len(head) : -len(tail)] for k in keys)
                if not cursor or len(names) >= MAX_QUEUES:
                    break
        found = sorted(n for n in names if n and "{" not in n and "}" not in n)[:MAX_QUEUES]
        with self._lock:
            self._found = (time.monotonic(), found)
        return found

    def _nodes(self) -> list[redis.Redis]:
        # A cluster's keys are spread over its masters: each is scanned on its own.
        if isinstance(self.client, redis.cluster.RedisCluster):
            cluster: Any = self.client
            return [cluster.get_redis_connection(n) for n in cluster.get_primaries()]
        return [self.client]

    def queue(self, name: str) -> RedisQueue:
        """The queue ``name`` (ConfigError for a name no queue could have)."""
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = RedisQueue(
                    RedisQueueConfig(client=self.client, name=name, prefix=self.prefix)
                )
                if len(self._queues) >= 1000:  # names come from URLs: keep the cache bounded
                    self._queues.clear()
                self._queues[name] = queue
            return queue

    def client_of(self, name: str) -> Client:
        """A producer-only `Client` of one queue, for the actions."""
        return Client(ClientConfig(queue=self.queue(name)))

    def summary(self, name: str) -> QueueSummary:
        """Counts, the last hour per minute, the head of line's age and live workers."""
        queue = self.queue(name)
        stats = queue.stats()
        history = queue.history()
        return QueueSummary(
            name=name,
            stats=stats,
            history=history,
            oldest_pending_age=oldest_pending_age(queue),
            workers=len(queue.workers()),
        )

    def page(
        self,
        name: str,
        status: JobStatus,
        start: int = 0,
        job_type: str = "",
        error_text: str = "",
    ) -> JobPage:
        """One page of the jobs in ``status``, optionally filtered, from index rank ``start``.

        Unfiltered: one ZRANGE of `PAGE_SIZE` and one pipeline of as many HGETALLs.
        Filtered: at most `FILTER_WINDOW` records read, in chunks of `FILTER_CHUNK`.
        """
        queue = self.queue(name)
        total = int(self.client.zcard(getattr(queue.keys, status.value)))
        start = max(0, start)
        if not job_type and not error_text:
            found = queue.list_jobs(status, limit=PAGE_SIZE + 1, offset=start)
            more = len(found) > PAGE_SIZE
            return JobPage(
                jobs=tuple(found[:PAGE_SIZE]),
                start=start,
                next_start=start + PAGE_SIZE if more else None,
                scanned=min(PAGE_SIZE, max(total - start, 0)),
                total=total,
                filtered=False,
            )
        matched: list[Job] = []
        position = start
        needle = error_text.casefold()
        while position < total and position - start < FILTER_WINDOW:
            chunk = queue.list_jobs(status, limit=FILTER_CHUNK, offset=position)
            if not chunk:
                break
            for offset, job in enumerate(chunk):
                if job_type and job.type != job_type:
                    continue
                if needle and needle not in (job.error or "").casefold():
                    continue
                matched.append(job)
                if len(matched) == PAGE_SIZE:
                    position += offset + 1
                    break
            else:
                position += FILTER_CHUNK
                continue
            break
        position = min(position, total)
        return JobPage(
            jobs=tuple(matched),
            start=start,
            next_start=position if position < total else None,
            scanned=position - start,
            total=total,
            filtered=True,
        )

    def workers(self, name: str) -> list[WorkerInfo]:
        """The live worker pools of one queue."""
        return self.queue(name).workers()

    def crons(self, name: str) -> list[dict[str, str]]:
        """The cron jobs announced on one queue."""
        return self.queue(name).crons()

    def delete(self, name: str, job_id: str) -> int:
        """Delete a finished job: 1 deleted, 0 not finished (cancel it first), -1 no job."""
        k = self.queue(name).keys
        keys = [k.job(job_id), k.completed, k.failed, k.cancelled]
        return int(cast("Any", self.client).eval(_DELETE_LUA, len(keys), *keys, job_id))


def valid_name(store: Store, name: str) -> bool:
    """Whether ``name`` can be a queue (a value from a URL must not build odd keys)."""
    try:
        store.queue(name)
    except ConfigError:
        return False
    return True
