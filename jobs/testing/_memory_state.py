"""The scripts of ``jobs/queue/lua`` in plain Python, over one in-memory queue's data.

Each method of `QueueState` is one Lua script (named after it) over the same data
(`jobs.testing._memory_lib`): the same record fields, index scores and counters.
`jobs.testing.MemoryQueue` calls them under its lock; the model test
(tests/integration/test_model.py) runs the same operation sequences against the scripts
and against these rules.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs.testing._memory_lib import BAND, LOST_ERROR, PROMOTE_ON_WRITE, QueueLib

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class QueueState(QueueLib):
    """One queue's data and the scripts over it."""

    def enqueue(
        self,
        now: int,
        job_type: str,
        settings: Sequence[Any],
        unique: str,
        unique_for: int,
        jobs: Iterable[tuple[str, bytes]],
    ) -> list[str | int]:
        """enqueue.lua after its type lookup: 1 written, 0 id taken, or the unique holder."""
        priority, max_retries, timeout_ms, backoff, metadata, delay = settings
        promoted = self.promote_due(now, PROMOTE_ON_WRITE)
        batch = list(jobs)
        seq = self.take_seq(len(batch)) - len(batch)
        out: list[str | int] = []
        created = 0
        for job_id, payload in batch:
            seq += 1
            holder = self.unique_holder(unique, now) if unique else None
            if holder is not None:
                out.append(holder)
                continue
            if self.exists(job_id, now):
                out.append(0)
                continue
            score = (1000 - int(priority)) * BAND + seq
            status, run_at = "pending", now
            if int(delay) > 0:
                status, run_at = "scheduled", now + int(delay)
                self.index["scheduled"][job_id] = run_at
            else:
                self.index["pending"][job_id] = score
            record = {
                "id": job_id,
                "type": job_type,
                "payload": payload,
                "status": status,
                "priority": str(priority),
                "max_retries": str(max_retries),
                "created_at": str(now),
                "score": str(score),
            }
            if int(delay) > 0:  # else run_at is created_at (add_job in _lib.lua)
                record["run_at"] = str(run_at)
            if backoff != "":
                record["backoff"] = str(backoff)
            if timeout_ms != "":
                record["timeout_ms"] = str(timeout_ms)
            if metadata not in ("{}", b"{}"):
                record["metadata"] = metadata
            self.records[job_id] = record
            if unique:
                self.unique[unique] = (job_id, None)
                record["unique"] = unique
                if unique_for > 0:
                    record["unique_for"] = str(unique_for)
            self.count_minute(now, "enqueued")
            created += 1
            out.append(1)
        if created:
            self.stats["total"] += created
        if created or promoted:
            self.wake = True
        return out

    def fetch(
        self, now: int, count: int, lease_ms: int, promote: int, request: str, request_ttl: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """fetch.lua: the records leased (copies), and when the earliest scheduled is due."""
        deadline = now + lease_ms
        out: list[dict[str, Any]] = []
        known = self.fetches.get(request)
        if known is not None and known[0] > now:
            for job_id, n in sorted(known[1].items(), key=lambda item: (item[1], item[0])):
                record = self.holds_lease(job_id, f"{request}:{n}", now)
                if record is not None:
                    self.index["processing"][job_id] = deadline
                    out.append(dict(record))
            self.fetches[request] = (now + request_ttl, known[1])
        else:
            self.promote_due(now, promote)
            leased: dict[str, int] = {}
            popped = self.ordered("pending")[: max(count, 0)]
            # One number per popped id is taken, whether it is leased or not (fetch.lua).
            token = self.lease_seq
            self.lease_seq += len(popped)
            for job_id in popped:
                del self.index["pending"][job_id]
                record = self.record(job_id, now)
                if record is None:
                    self.set_aside(job_id)
                    continue  # deleted by hand: dropped, not leased
                token += 1
                record["attempts"] = str(int(record.get("attempts") or 0) + 1)
                record.update(
                    id=job_id, status="processing", started_at=str(now), lease=f"{request}:{token}"
                )
                self.index["processing"][job_id] = deadline
                leased[job_id] = token
                out.append(dict(record))
            if leased:
                self.fetches[request] = (now + request_ttl, leased)
        if self.index["pending"]:
            self.wake = True
        return out, self.earliest("scheduled")

    def complete(self, now: int, job_id: str, token: str, result: bytes) -> bool:
        """complete.lua for one job: recorded, or refused by the fence."""
        record = self.holds_lease(job_id, token, now)
        if record is not None:
            record["result"] = result
            record["written_by"] = f"c:{token}"
            self.index["processing"].pop(job_id, None)
            self.finalize(job_id, "completed", now, self.completed_ttl, 0)
            return True
        known = self.record(job_id, now)
        if known is not None and known.get("written_by") == f"c:{token}":
            return True
        self.stats["rejected"] += 1
        return False

    def fail(
        self, now: int, job_id: str, token: str, error: str, trace: str, delay: int
    ) -> tuple[bool, str, int]:
        """fail.lua for one job (after its promote_due): (recorded, status, run_at)."""
        record = self.holds_lease(job_id, token, now)
        if record is None:
            known = self.record(job_id, now)
            if known is not None and known.get("written_by") == f"f:{token}":
                return True, known.get("status", ""), int(known.get("run_at") or 0)
            self.stats["rejected"] += 1
            return False, "", 0
        self.index["processing"].pop(job_id, None)
        record.update(error=error, traceback=trace, written_by=f"f:{token}")
        record.pop("lease", None)
        failures = int(record.get("failures") or 0) + 1
        record["failures"] = str(failures)
        try:
            max_retries = int(record.get("max_retries") or 0)
        except ValueError:
            max_retries = 0
        if delay < 0 or failures > max_retries:
            self.finalize(job_id, "failed", now, self.failed_ttl, self.keep_failed)
            return True, "failed", 0
        self.stats["retried"] += 1
        self.wake = True
        if delay == 0:
            record["run_at"] = str(now)
            self.make_ready(job_id, record)
            return True, "pending", now
        record.update(status="scheduled", run_at=str(now + delay))
        self.index["scheduled"][job_id] = now + delay
        return True, "scheduled", now + delay

    def extend(self, now: int, job_id: str, token: str, lease_ms: int, progress: str) -> int:
        """heartbeat.lua for one job: 1 extended, 2 cancelled, 0 lease lost."""
        record = self.holds_lease(job_id, token, now)
        if record is not None:
            self.index["processing"][job_id] = now + lease_ms
            if progress:
                record["progress"] = progress
            return 1
        known = self.record(job_id, now)
        return 2 if known is not None and known.get("status") == "cancelled" else 0

    def beat(self, now: int, pool_id: str, info: str, ttl: int, first: bool) -> None:
        """heartbeat.lua's pool record."""
        if ttl <= 0:
            return
        record = self.workers.setdefault(pool_id, {"started_at": now})
        record.update(info=info, last_seen=now, expires=now + ttl)
        if first:
            for other in [p for p, r in self.workers.items() if r["expires"] < now]:
                del self.workers[other]

    def reap(
        self, now: int, limit: int, trim: bool, keep_completed: int, batch: int
    ) -> tuple[int, int]:
        """reap.lua: (requeued, failed for too many lost leases)."""
        processing = self.index["processing"]
        expired = [i for i in self.ordered("processing") if processing[i] < now][:limit]
        requeued = dead = 0
        for job_id in expired:
            del processing[job_id]
            record = self.record(job_id, now)
            if record is None:
                self.set_aside(job_id)
                continue
            if record.get("status") != "processing":
                continue
            record.pop("lease", None)
            self.stats["lost_leases"] += 1
            lost = int(record.get("lost") or 0) + 1
            record["lost"] = str(lost)
            if lost >= self.max_lost:
                record["error"] = LOST_ERROR
                self.finalize(job_id, "failed", now, self.failed_ttl, self.keep_failed)
                dead += 1
            else:
                self.make_ready_front(job_id, record)
                requeued += 1
        if trim:
            for name, ttl in (
                ("completed", self.completed_ttl),
                ("failed", self.failed_ttl),
                ("cancelled", self.failed_ttl),
            ):
                index = self.index[name]
                for old in [i for i, score in index.items() if score < now - ttl]:
                    del index[old]
        self.trim_completed(keep_completed, batch)
        next_due = self.earliest("scheduled")
        if self.index["pending"] or (next_due is not None and next_due <= now):
            self.wake = True
        return requeued, dead

    def trim_completed(self, keep: int, most: int) -> None:
        """Drop the oldest completed records past ``keep`` (0: no bound), ``most`` at most."""
        completed = self.index["completed"]
        if keep > 0 and len(completed) > keep:
            for old in self.ordered("completed")[: min(len(completed) - keep, most)]:
                self.delete(old)
                del completed[old]

    def requeue(self, now: int, held: Sequence[tuple[str, str]]) -> int:
        """requeue.lua: how many went back to the front of the queue."""
        count = 0
        for job_id, token in held:
            record = self.holds_lease(job_id, token, now)
            if record is not None:
                self.index["processing"].pop(job_id, None)
                record.pop("lease", None)
                record["attempts"] = str(int(record.get("attempts") or 0) - 1)
                self.make_ready_front(job_id, record)
                count += 1
        if held:
            self.wake = True
        return count

    def cancel(self, now: int, job_id: str, request: str, answer_ttl: int) -> int:
        """cancel.lua: 1 cancelled, 2 cancelled while running, 0 final already, -1 no job."""
        answered = self.answers.get(request)
        if answered is not None and answered[0] > now:
            return answered[1]
        record = self.record(job_id, now)
        if record is None:
            return -1
        status = record.get("status")
        if status not in ("pending", "scheduled", "processing"):
            return 0
        self.index[status].pop(job_id, None)
        self.finalize(job_id, "cancelled", now, self.failed_ttl, self.keep_failed)
        code = 2 if status == "processing" else 1
        self.answers[request] = (now + answer_ttl, code)
        return code

    def retry(self, now: int, job_id: str, request: str, answer_ttl: int) -> int:
        """retry.lua: 1 put back, 0 not failed or cancelled, -1 no job."""
        answered = self.answers.get(request)
        if answered is not None and answered[0] > now:
            return answered[1]
        record = self.record(job_id, now)
        if record is None:
            return -1
        status = record.get("status", "")
        if status not in ("failed", "cancelled"):
            return 0
        self.promote_due(now, PROMOTE_ON_WRITE)
        self.index["failed"].pop(job_id, None)
        self.index["cancelled"].pop(job_id, None)
        if self.stats[status] > 0:
            self.stats[status] -= 1
        self.expires.pop(job_id, None)
        record.pop("completed_at", None)
        record.pop("lease", None)
        record.update(failures="0", lost="0", run_at=str(now))
        self.make_ready(job_id, record)
        unique = record.get("unique")
        if unique and self.unique_holder(unique, now) in (None, job_id):
            self.unique[unique] = (job_id, None)
        self.wake = True
        if answer_ttl > 0:
            self.answers[request] = (now + answer_ttl, 1)
        return 1

    def purge(self, status: str) -> int:
        """purge.lua, until the index is empty: how many records went."""
        doomed = list(self.index[status])
        for job_id in doomed:
            self.delete(job_id)
        self.index[status].clear()
        return len(doomed)

    def advance(self, by: int) -> int:
        """advance.lua: every scheduled job due ``by`` ms earlier; how many."""
        scheduled = self.index["scheduled"]
        for job_id in scheduled:
            scheduled[job_id] -= by
            record = self.records.get(job_id)
            if record is not None and str(record.get("run_at", "")).isdigit():
                record["run_at"] = str(int(record["run_at"]) - by)
        return len(scheduled)

    def live_workers(self, now: int) -> list[tuple[str, dict[str, Any]]]:
        """workers.lua: the pools whose records have not expired."""
        for other in [p for p, r in self.workers.items() if r["expires"] < now]:
            del self.workers[other]
        return sorted(self.workers.items(), key=lambda item: (item[1]["expires"], item[0]))

    def declared(self, job_type: str) -> dict[str, Any] | None:
        raw = self.types.get(job_type)
        if raw is None:
            return None
        try:
            settings = json.loads(raw)
        except ValueError:
            return {}
        return settings if isinstance(settings, dict) else {}
