"""The worker side of `MemoryQueue`: `jobs.worker.WorkerQueue` in memory."""

from __future__ import annotations

import json
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobs import _codec
from jobs.queue._base import COMPLETED_TRIM, FETCH_RECORD_MARGIN_MS, PROMOTE_BATCH, REAP_BATCH
from jobs.queue._keys import priority_of_score
from jobs.testing._memory_base import MemoryBase
from jobs.testing._memory_lib import PROMOTE_ON_WRITE
from jobs.worker._protocol import Beat, Completed, Fetched, Leased, LeaseState, Written

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from jobs.testing._memory_state import QueueState
    from jobs.worker._protocol import Outcome, WorkerQueue

_LEASE_STATES = {1: LeaseState.HELD, 2: LeaseState.CANCELLED, 0: LeaseState.LOST}


class MemoryWorkerSide(MemoryBase):
    """What a worker pool asks of a `MemoryQueue`."""

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first)."""
        fetched = self.exchange((), count, lease, request=request or secrets.token_hex(8))[1]
        assert fetched is not None
        return fetched

    def write(self, outcomes: Sequence[Outcome]) -> list[Written]:
        """Record finished attempts, each fenced by its lease; one reply per outcome."""
        return self.exchange(outcomes, 0, None)[0]

    def begin_exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> Callable[[], tuple[list[Written], Fetched | None]]:
        """`exchange` now; the function returned gives its answer (nothing runs ahead here)."""
        answer = self.exchange(outcomes, count, lease, request=request)
        return lambda: answer

    def exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> tuple[list[Written], Fetched | None]:
        """`write` these outcomes and `fetch` up to ``count`` jobs in one call.

        As `RedisQueue.exchange`: completions are written before failures (one script
        each), then the fetch.
        """
        for outcome in outcomes:  # what redis-py would refuse to encode, before anything
            if isinstance(outcome, Completed):
                bytes(outcome.result)
            else:
                outcome.error.encode()
                outcome.traceback.encode()
        written: list[Written] = [Written(False, "", 0, 0)] * len(outcomes)
        fetched: Fetched | None = None
        with self._store.changed:
            state, now = self._enter()
            recorded = 0
            for index, outcome in enumerate(outcomes):
                if isinstance(outcome, Completed):
                    held = outcome.leased
                    ok = state.complete(now, held.job_id, held.token, outcome.result)
                    written[index] = Written(ok, "completed", now, 0)
                    recorded += ok
            if recorded:
                state.trim_completed(self._max_completed, 2 * recorded)
            if any(not isinstance(o, Completed) for o in outcomes):
                state.promote_due(now, PROMOTE_ON_WRITE)
            for index, outcome in enumerate(outcomes):
                if not isinstance(outcome, Completed):
                    held = outcome.leased
                    delay = -1 if outcome.permanent else max(outcome.delay_ms, 0)
                    ok, status, run_at = state.fail(
                        now, held.job_id, held.token, outcome.error, outcome.traceback, delay
                    )
                    written[index] = Written(ok, status, now, run_at)
            if count > 0 or request is not None:
                assert lease is not None
                lease_ms = _codec.to_ms(lease)
                records, next_due = state.fetch(
                    now,
                    count,
                    lease_ms,
                    PROMOTE_BATCH,
                    request or secrets.token_hex(8),
                    lease_ms + FETCH_RECORD_MARGIN_MS,
                )
                more = bool(state.index["pending"])
                fetched = Fetched(now, next_due, [_leased(r) for r in records], more)
            self._announce()
        return written, fetched

    def heartbeat(
        self,
        pool_id: str,
        info: Mapping[str, Any],
        record_ttl: timedelta,
        held: Sequence[Leased],
        lease: timedelta,
        *,
        reap: bool = True,
        first: bool = False,
        trim: bool = False,
        progress: Sequence[str] = (),
    ) -> Beat:
        """Refresh the pool's record, extend its leases and (optionally) reap."""
        with self._store.changed:
            state, now = self._enter()
            state.beat(now, pool_id, json.dumps(dict(info)), _codec.to_ms(record_ttl), first)
            lease_ms = _codec.to_ms(lease)
            codes = [
                state.extend(now, j.job_id, j.token, lease_ms, progress[i] if progress else "")
                for i, j in enumerate(held)
            ]
            next_expiry = None
            if reap:
                self._reap(state, now, trim)
                next_expiry = state.earliest("processing")
            self._announce()
        return Beat(now, [_LEASE_STATES[c] for c in codes], next_expiry)

    def extend(self, pool_id: str, held: Sequence[Leased], lease: timedelta) -> list[LeaseState]:
        """Extend these leases only: what each one found."""
        return self.heartbeat(pool_id, {}, timedelta(0), held, lease, reap=False).leases

    def _reap(self, state: QueueState, now: int, trim: bool) -> tuple[int, int]:
        return state.reap(now, REAP_BATCH, trim, self._max_completed, COMPLETED_TRIM)

    def reap(self, *, trim: bool = False) -> tuple[int, int]:
        """Return expired leases to the queue now; (requeued, failed for too many losses)."""
        with self._store.changed:
            state, now = self._enter()
            found = self._reap(state, now, trim)
            self._announce()
        return found

    def requeue(self, held: Sequence[Leased]) -> int:
        """Hand held jobs back to the front of the queue, attempts not counted; how many."""
        with self._store.changed:
            state, now = self._enter()
            count = state.requeue(now, [(j.job_id, j.token) for j in held])
            self._announce()
        return count

    def wait_and_fetch(
        self, pool_id: str, timeout: float, count: int, lease: timedelta, request: str
    ) -> tuple[bool, Fetched]:
        """`wait_for_work` on this queue alone, then `fetch`."""
        woken = self.wait_for_work(pool_id, timeout)
        return woken, self.fetch(count, lease, request=request)

    def best_ready_priority(self) -> int | None:
        """The priority of the best job ready to run now, or None if none is."""
        with self._store.changed:
            state, _ = self._enter()
            scores = state.index["pending"].values()
            return priority_of_score(min(scores)) if scores else None

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[WorkerQueue] = ()) -> bool:
        """Block until woken or work is there, up to ``timeout`` seconds (real time).

        Queues of ``also`` from another `MemoryQueue` family cannot be waited on: True
        at once, so that the pool polls them.
        """
        states = [self._state]
        for other in also:
            if not isinstance(other, MemoryBase) or other._store is not self._store:
                return True
            states.append(other._state)
        deadline = time.monotonic() + timeout
        store = self._store
        with store.changed:
            while True:
                self._enter()
                if pool_id in store.pool_wakes:
                    store.pool_wakes.discard(pool_id)
                    return True
                for state in states:
                    if state.wake:
                        state.wake = False
                        return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return any(state.index["pending"] for state in states)
                store.changed.wait(left)

    def wake_pool(self, pool_id: str) -> None:
        """Wake the pool blocked in `wait_for_work`."""
        with self._store.changed:
            self._enter()
            self._store.pool_wakes.add(pool_id)
            self._announce()

    def forget_pool(self, pool_id: str) -> None:
        """Remove a stopped pool's record."""
        with self._store.changed:
            state, _ = self._enter()
            self._store.pool_wakes.discard(pool_id)
            state.workers.pop(pool_id, None)


def _leased(record: Mapping[str, Any]) -> Leased:
    fields = {n: record[n] for n in _codec.FETCHED_FIELDS if record.get(n) is not None}
    return Leased(str(record["id"]), str(record["lease"]), fields)
