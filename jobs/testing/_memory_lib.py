"""The data of one in-memory queue, and the rules of ``jobs/queue/lua/_lib.lua`` over it.

Job records are field maps with the scripts' fields; the indexes map ids to the same
scores as the Redis sorted sets; counters and the history count what the scripts count.
The scripts themselves are `jobs.testing._memory_state.QueueState`.

Times are the queue clock's milliseconds since the epoch (``now``), passed in.
"""

from __future__ import annotations

import collections
from typing import Any

from jobs.queue._keys import READY_BAND

#: (1000 - priority) * 2**42 + seq: a ready job's place (ready_score in _lib.lua).
BAND = READY_BAND
#: Due jobs made ready by a write (PROMOTE_ON_WRITE in _lib.lua).
PROMOTE_ON_WRITE = 1000
FINAL = frozenset({"completed", "failed", "cancelled"})
#: 'waiting' stays empty: dependencies are refused (see MemoryQueue.enqueue), but the
#: status exists, so that listing or purging it answers as on Redis.
INDEXES = ("pending", "scheduled", "processing", "completed", "failed", "cancelled", "waiting")
LOST_ERROR = "lease expired (worker lost)"


class QueueLib:
    """One queue's data, with the helpers every script shares (_lib.lua)."""

    def __init__(
        self, *, max_lost_leases: int, failed_ttl_ms: int, completed_ttl_ms: int, keep_failed: int
    ) -> None:
        self.max_lost = max_lost_leases
        self.failed_ttl = failed_ttl_ms
        self.completed_ttl = completed_ttl_ms
        self.keep_failed = keep_failed
        self.records: dict[str, dict[str, Any]] = {}
        self.expires: dict[str, int] = {}  # record id -> when it expires (finished jobs)
        self.index: dict[str, dict[str, int]] = {name: {} for name in INDEXES}
        self.stats: collections.Counter[str] = collections.Counter()
        self.last_processed: int | None = None
        self.history: collections.Counter[tuple[int, str]] = collections.Counter()
        self.seq = 0
        self.lease_seq = 0
        self.wake = False  # the queue's wake-up list holds its one marker
        self.fetches: dict[str, tuple[int, dict[str, int]]] = {}  # request -> (expiry, id -> n)
        self.answers: dict[str, tuple[int, int]] = {}  # cancel/retry request -> (expiry, code)
        self.unique: dict[str, tuple[str, int | None]] = {}  # key -> (holder, expiry)
        self.types: dict[str, str] = {}  # declared job types -> settings (JSON)
        self.workers: dict[str, dict[str, Any]] = {}  # pool id -> record, with 'expires'
        self.finished: list[str] = []  # ids finalized since the last look (announcements)
        #: Ids whose key holds something else than a record (`damage`): a script that
        #: meets one in an index sets it aside (`set_aside`); every read finds no job.
        self.damaged: set[str] = set()

    # -- records ------------------------------------------------------------------------

    def record(self, job_id: str, now: int) -> dict[str, Any] | None:
        """A job's record, unless it is missing or expired (an expired one is deleted)."""
        expiry = self.expires.get(job_id)
        if expiry is not None and expiry <= now:
            self.records.pop(job_id, None)
            del self.expires[job_id]
        return self.records.get(job_id)

    def delete(self, job_id: str) -> None:
        self.records.pop(job_id, None)
        self.expires.pop(job_id, None)
        self.damaged.discard(job_id)

    def exists(self, job_id: str, now: int) -> bool:
        return self.record(job_id, now) is not None or job_id in self.damaged

    def damage(self, job_id: str) -> None:
        """A foreign tool wrote a string where the job's record was (for the model test)."""
        self.delete(job_id)
        self.damaged.add(job_id)

    def set_aside(self, job_id: str) -> bool:
        """set_aside in _lib.lua: True (counted) if the id's key is damaged."""
        if job_id not in self.damaged:
            return False
        self.stats["damaged"] += 1
        return True

    def holds_lease(self, job_id: str, token: str, now: int) -> dict[str, Any] | None:
        record = self.record(job_id, now)
        if record is not None and record.get("status") == "processing":
            return record if record.get("lease") == token else None
        return None

    def ordered(self, name: str, *, reverse: bool = False) -> list[str]:
        """An index's ids by (score, id), as ZRANGE orders them."""
        entries = self.index[name]
        return sorted(entries, key=lambda i: (entries[i], i), reverse=reverse)

    def earliest(self, name: str) -> int | None:
        entries = self.index[name]
        return min(entries.values()) if entries else None

    def count_minute(self, now: int, field: str, by: int = 1) -> None:
        self.history[now // 60_000, field] += by

    # -- the rules of _lib.lua ------------------------------------------------------------

    def take_seq(self, n: int = 1) -> int:
        self.seq += n
        return self.seq

    def make_ready(self, job_id: str, record: dict[str, Any]) -> None:
        try:
            priority = int(record.get("priority") or 0)
        except ValueError:
            priority = 0
        score = (1000 - priority) * BAND + self.take_seq()
        self.index["pending"][job_id] = score
        record["status"] = "pending"
        record["score"] = str(score)
        record.pop("progress", None)

    def make_ready_front(self, job_id: str, record: dict[str, Any]) -> None:
        score = str(record.get("score", ""))
        if not score.lstrip("-").isdigit():
            self.make_ready(job_id, record)
            return
        self.index["pending"][job_id] = int(score)
        record["status"] = "pending"
        record.pop("progress", None)

    def promote_due(self, now: int, limit: int) -> int:
        scheduled = self.index["scheduled"]
        due = [i for i in self.ordered("scheduled") if scheduled[i] <= now][:limit]
        for job_id in due:
            del scheduled[job_id]
            record = self.record(job_id, now)
            if record is not None:
                self.make_ready(job_id, record)
            else:
                self.set_aside(job_id)
        return len(due)

    def unique_holder(self, key: str, now: int) -> str | None:
        entry = self.unique.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= now):
            return None
        holder = entry[0]
        record = self.record(holder, now)
        if record is None or record.get("unique") != key:
            return None
        if record.get("status") in FINAL:
            window = int(record.get("unique_for") or 0)
            if window <= 0 or int(record.get("completed_at") or 0) + window <= now:
                return None
        return holder

    def release_unique(self, job_id: str, record: dict[str, Any], now: int) -> None:
        key = record.get("unique")
        entry = self.unique.get(key) if key else None
        if key and entry is not None and entry[0] == job_id:
            window = int(record.get("unique_for") or 0)
            if window > 0:
                self.unique[key] = (job_id, now + window)
            else:
                del self.unique[key]

    def finalize(self, job_id: str, status: str, now: int, ttl: int, keep: int) -> None:
        record = self.records[job_id]
        self.finished.append(job_id)
        self.release_unique(job_id, record, now)
        record["status"] = status
        record["completed_at"] = str(now)
        record.pop("lease", None)
        self.expires[job_id] = now + ttl
        index = self.index[status]
        index[job_id] = now
        self.stats[status] += 1
        self.last_processed = now
        self.count_minute(now, status)
        for old in [i for i, score in index.items() if score < now - ttl]:
            del index[old]
        if keep > 0 and len(index) > keep:
            for old in self.ordered(status)[: len(index) - keep]:
                self.delete(old)
                del index[old]
