"""The worker side of `RedisQueue`: lease, wait, extend, write outcomes, hand back, reap."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs import _codec
from jobs.queue._scripts import Arg, Script, execute
from jobs.queue._wire import (
    Failure,
    Fetched,
    HeldJob,
    Leased,
    Outcome,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta
from jobs.queue._base import (
    COMPLETED_TRIM,
    FETCH_RECORD_MARGIN_MS,
    PROMOTE_BATCH,
    REAP_BATCH,
    QueueBase,
    new_request_id,
)


class WorkerSide(QueueBase):
    """What a worker pool asks of its queue."""

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first).

        ``request``: the fetch's request id (default: a fresh one). A fetch sent again
        with the id of one that ran leases nothing new: it returns the jobs the first
        leased, still held with their tokens (fetch.lua), whatever ``count``.
        """
        fetched = self.exchange((), (), count, lease, request=request)[2]
        assert fetched is not None
        return fetched

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[QueueBase] = ()) -> bool:
        """Block until a wake-up marker arrives or ``timeout`` seconds pass.

        True if woken, or if a job is ready all the same: a marker can be lost (the
        reply to the BLPOP that took it lost and redis-py re-sending the BLPOP, or a
        pool that took it and died before fetching), and then one command more per
        timeout finds the job, instead of the next reap.

        ``also``: other queues the pool serves, in this queue's cluster slot.
        ``timeout`` must stay below the client's socket timeout; `socket_timeout` tells it.
        """
        queues = [self, *also]
        keys = [self.keys.pool_wake(pool_id), *(q.keys.wake for q in queues)]
        if self.client.blpop(keys, timeout) is not None:
            return True
        # One EXISTS for all: a zset key exists while it has members.
        return bool(self.client.exists(*(q.keys.pending for q in queues)))

    def wake_pool(self, pool_id: str) -> None:
        """Wake one pool blocked in `wait_for_work` (so that stopping it is immediate)."""
        key = self.keys.pool_wake(pool_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, "stop")
        pipe.pexpire(key, 60_000)
        pipe.execute()

    def forget_pool(self, pool_id: str) -> None:
        """Remove a stopped pool's registry record and private wake-up list."""
        pipe = self.client.pipeline(transaction=False)
        # One key per DEL: redis-py's cluster pipeline refuses a multi-key delete.
        pipe.delete(self.keys.pool_wake(pool_id))
        pipe.delete(self.keys.worker(pool_id))
        pipe.zrem(self.keys.workers, pool_id)
        pipe.execute()

    def heartbeat(
        self,
        pool_id: str,
        info: dict[str, Any],
        record_ttl: timedelta,
        held: Sequence[HeldJob],
        lease: timedelta,
        *,
        reap: bool = True,
        first: bool = False,
        trim: bool = False,
        progress: Sequence[str] = (),
    ) -> tuple[int, list[int], int | None]:
        """Refresh the pool's record, extend its leases and (optionally) reap, in one round trip.

        ``first``: the pool's first beat (it also prunes the records of dead pools).
        ``trim``: the reap also drops index entries of expired finished records.
        ``progress``: per held job, its new progress (JSON) to store, or '' for none.

        Returns the Redis time (ms), each held job's code (1 extended, 2 cancelled, 0 lease
        lost) and the earliest lease deadline left in the queue after reaping (Redis ms), or
        None.
        """
        k = self.keys
        args: list[Arg] = [
            k.job_prefix,
            _codec.to_ms(lease),
            _codec.to_ms(record_ttl),
            pool_id,
            json.dumps(info),
            "1" if first else "0",
        ]
        for index, job in enumerate(held):
            args += (job.job_id, job.token, progress[index] if progress else "")
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = [
            (self._scripts.heartbeat, (k.processing, k.workers, k.worker(pool_id)), args)
        ]
        if reap:
            calls.append(self._reap_call(trim))
        replies = execute(self.client, calls)
        now, codes = int(replies[0][0]), [int(c) for c in replies[0][1:]]
        if not reap:
            return now, codes, None
        next_expiry = int(replies[1][3])
        return now, codes, None if next_expiry < 0 else next_expiry

    def _reap_call(self, trim: bool = False) -> tuple[Script, Sequence[str], Sequence[Arg]]:
        k = self.keys
        return (
            self._scripts.reap,
            (
                k.processing,
                k.pending,
                k.scheduled,
                k.failed,
                k.stats,
                k.seq,
                k.wake,
                k.completed,
                k.cancelled,
            ),
            (
                k.job_prefix,
                self.config.max_lost_leases,
                self._failed_ttl_ms,
                self.config.max_failed_jobs,
                REAP_BATCH,
                self._completed_ttl_ms if trim else "",
                self.config.max_completed_jobs,
                COMPLETED_TRIM,
            ),
        )

    def reap(self, *, trim: bool = False) -> tuple[int, int]:
        """Return expired leases to the queue now; (requeued, failed for too many losses).

        ``trim``: also drop the index entries of finished jobs whose records expired.
        """
        script, keys, args = self._reap_call(trim)
        reply = script(self.client, keys, args)
        return int(reply[1]), int(reply[2])

    def finish(
        self, completions: Sequence[tuple[HeldJob, bytes]], failures: Sequence[Failure]
    ) -> tuple[list[Outcome], list[Outcome]]:
        """Record finished attempts, all fenced by their lease tokens, in one round trip.

        Returns one `Outcome` per completion and per failure, in order.
        """
        done, failed, _ = self.exchange(completions, failures, 0, None)
        return done, failed

    def exchange(
        self,
        completions: Sequence[tuple[HeldJob, bytes]],
        failures: Sequence[Failure],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> tuple[list[Outcome], list[Outcome], Fetched | None]:
        """`finish` these outcomes and `fetch` up to ``count`` jobs, in one round trip.

        The worker pool's hot path: what a busy pool writes and what it takes next share
        a pipeline. Either part may be empty (``count`` 0 and no ``request``: no fetch).
        ``request`` is the fetch's request id (see `fetch`); passing the id of a fetch
        whose reply never came fetches even with ``count`` 0, to collect its jobs.
        """
        k = self.keys
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []
        if completions:
            args: list[Arg] = [k.job_prefix, self._completed_ttl_ms]
            for held, result in completions:
                args += (held.job_id, held.token, result)
            calls.append((self._scripts.complete, (k.processing, k.completed, k.stats), args))
        if failures:
            args = [k.job_prefix, self._failed_ttl_ms, self.config.max_failed_jobs]
            for f in failures:
                delay = -1 if f.permanent else max(f.delay_ms, 0)
                args += (f.job_id, f.token, f.error, f.traceback, delay)
            calls.append(
                (
                    self._scripts.fail,
                    (k.processing, k.pending, k.scheduled, k.failed, k.stats, k.seq, k.wake),
                    args,
                )
            )
        fetching = count > 0 or request is not None
        if fetching:
            assert lease is not None
            lease_ms = _codec.to_ms(lease)
            request = request or new_request_id()
            calls.append(
                (
                    self._scripts.fetch,
                    (
                        k.pending,
                        k.scheduled,
                        k.processing,
                        k.seq,
                        k.lease_seq,
                        k.wake,
                        k.request(request),
                        k.stats,
                    ),
                    (
                        k.job_prefix,
                        count,
                        lease_ms,
                        PROMOTE_BATCH,
                        request,
                        lease_ms + FETCH_RECORD_MARGIN_MS,
                    ),
                )
            )
        if not calls:
            return [], [], None
        replies = iter(execute(self.client, calls))
        done: list[Outcome] = []
        failed: list[Outcome] = []
        fetched: Fetched | None = None
        if completions:
            reply = next(replies)
            now = int(reply[0])
            done = [Outcome(bool(int(c)), "completed", now, 0) for c in reply[1:]]
        if failures:
            reply = next(replies)
            now = int(reply[0])
            failed = [
                Outcome(bool(int(reply[i])), _codec.text(reply[i + 1]), now, int(reply[i + 2]))
                for i in range(1, len(reply), 3)
            ]
        if fetching:
            reply = next(replies)
            leased = []
            names = _codec.FETCHED_FIELDS
            for values in reply[2:]:
                fields = {n: v for n, v in zip(names, values, strict=True) if v is not None}
                leased.append(
                    Leased(_codec.text(fields["id"]), _codec.text(fields["lease"]), fields)
                )
            next_due = int(reply[1])
            fetched = Fetched(int(reply[0]), None if next_due < 0 else next_due, leased)
        return done, failed, fetched

    def requeue(self, held: Sequence[HeldJob]) -> int:
        """Hand held jobs back to the front of the queue, attempts not counted.

        Returns:
            How many went back (a job whose lease was already lost does not).
        """
        if not held:
            return 0
        k = self.keys
        args: list[Arg] = [k.job_prefix]
        for job in held:
            args += (job.job_id, job.token)
        reply = self._scripts.requeue(self.client, (k.processing, k.pending, k.seq, k.wake), args)
        return sum(int(c) for c in reply[1:])
