"""Reading jobs for producers: `RedisQueue.get`, `get_many`, and waiting for outcomes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster

from jobs import _codec, _record
from jobs._loops import backoff_delay
from jobs.errors import JobNotFound, RedisUnavailable, WaitTimeout
from jobs.queue._base import GET_BATCH, QueueBase, _wrong_type
from jobs.queue._cluster import run_on_node
from jobs.queue._waiter import RECHECK, FinishedListener

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from jobs.job import Job


class Reader(QueueBase):
    """Read job records, and wait for jobs to finish."""

    def get(self, job_id: str) -> Job:
        """The job's current record.

        Raises:
            JobNotFound: no such job (or its record expired).
            CorruptRecord: the record has no id, type or status (other damaged fields
                are shown as their raw text; the worker fails such a job by name), or
                the job's key holds something else than a record (see
                `QueueStats.damaged_records`).
        """
        with self._unavailable_as_error():
            try:
                fields = self.client.hgetall(self.keys.job(job_id))
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                raise _codec.CorruptRecord(
                    f"the key of job {job_id!r} holds another type of value, not a job record"
                ) from None
        if not fields:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return _record.read_back(fields, self.name)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The records of ``job_ids`` (None for a missing one), `GET_BATCH` per round trip."""
        found: list[Job | None] = []
        for start in range(0, len(job_ids), GET_BATCH):
            chunk = job_ids[start : start + GET_BATCH]

            def read(client: Any, chunk: Sequence[str] = chunk) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hgetall(self.keys.job(job_id))
                return cast("list[Any]", pipe.execute())

            with self._unavailable_as_error():
                if isinstance(self.client, redis.cluster.RedisCluster):
                    records = run_on_node(self.client, self.keys.pending, read)
                else:
                    records = read(self.client)
            found += [
                _record.read_back(fields, self.name) if fields else None for fields in records
            ]
        return found

    def as_finished(self, job_ids: Sequence[str], timeout: float | None) -> Iterator[Job]:
        """Yield each job of ``job_ids`` once it is final (completed, failed, cancelled).

        Woken by the scripts' ``finished`` announcements, not by polling; one pub/sub
        connection per queue object serves every waiter. A Redis outage is waited out
        (until ``timeout``): the subscription and the reads resume when it is back.

        Raises:
            JobNotFound: a job's record does not exist (or expired, or was purged).
            WaitTimeout: ``timeout`` seconds passed first (jobs yielded so far stand).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = self._finished_listener()
        waiting = set(job_ids)
        watch = listener.watch(waiting)
        failures = 0
        try:
            while waiting:
                left = RECHECK if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"{len(waiting)} of {len(job_ids)} jobs not finished within "
                        f"{timeout} s (first: {sorted(waiting)[0]})",
                        job_ids=tuple(sorted(waiting)),
                    )
                # A status read before the subscription is live could miss the finish,
                # so wait for it first (a millisecond, normally); one that does not come
                # (Redis away, or an ACL without SUBSCRIBE) leaves us re-reading every
                # RECHECK seconds.
                listener.wait_subscribed(min(left, RECHECK))
                due = list(watch.take_due() & waiting)
                if due and not listener.readers.acquire(timeout=min(left, RECHECK)):
                    watch.mark(due)  # other waiters held every reader slot: try again
                    continue
                jobs: list[Job | None] | None
                try:
                    jobs = self.get_many(due)
                except RedisUnavailable:
                    jobs = None
                finally:
                    if due:
                        listener.readers.release()
                if jobs is None:
                    failures += 1
                    watch.mark(due)
                    watch.event.wait(min(backoff_delay(failures), left))
                    continue
                failures = 0
                for job_id, job in zip(due, jobs, strict=True):
                    if job is None:
                        raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
                    if job.status.is_final:
                        waiting.discard(job_id)
                        yield job
                if waiting and not watch.event.wait(min(left, RECHECK)):
                    watch.mark(waiting)  # nothing announced for a while: read anyway
        finally:
            listener.unwatch(watch)

    def _finished_listener(self) -> FinishedListener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = FinishedListener(self.client, self.keys.finished)
            return self._listener
