"""`MemoryQueue`: `RedisQueue`'s twin in memory, for tests (single process, no server).

Its rules are the Lua scripts' (`jobs.testing._memory_state`, checked against the
scripts by the model test), its API the one a `Client` and a worker pool use
(`jobs.JobQueue`), and its clock injectable (`ManualClock`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from jobs import _codec
from jobs.errors import ConfigError, JobNotFound, RedisUnavailable, UnknownJobType, WaitTimeout
from jobs.job import JobStatus, MinuteCounts, QueueHistory, QueueStats, WorkerInfo
from jobs.queue._base import (
    _HISTORY_FIELDS,
    _LETTERS,
    ANSWER_TTL_MS,
    COMPLETED_TRIM,
    FETCH_RECORD_MARGIN_MS,
    HISTORY_MINUTES,
    PROMOTE_BATCH,
    REAP_BATCH,
)
from jobs.queue._wire import job_args
from jobs.testing._memory_state import PROMOTE_ON_WRITE, QueueState
from jobs.worker._protocol import Beat, Completed, Fetched, Leased, LeaseState, Written

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from jobs.config import JobConfig
    from jobs.job import Job
    from jobs.worker._protocol import Outcome, WorkerQueue

_LEASE_STATES = {1: LeaseState.HELD, 2: LeaseState.CANCELLED, 0: LeaseState.LOST}


class ManualClock:
    """A clock that moves only when told to: pass it to `MemoryQueue` as ``clock``.

    Calling it returns the time in seconds since the epoch, like `time.time`.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 UTC
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock ahead by ``seconds``."""
        by = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if by < 0:
            raise ConfigError(f"seconds must be >= 0 (the clock never goes back), got {by}")
        with self._lock:
            self._now += by


class _Store:
    """What the queues of one `MemoryQueue` family share: a lock, a clock, wake-ups."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.changed = threading.Condition(threading.RLock())
        self.queues: dict[str, QueueState] = {}
        self.pool_wakes: set[str] = set()
        self.unavailable = False

    def now(self) -> int:
        return round(self.clock() * 1000)


class MemoryQueue:
    """A job queue in this process's memory: `RedisQueue`'s semantics without Redis.

    For tests only: single-process (nothing is shared with other processes, nothing
    survives the process), every call takes one lock. A `Client` takes it like a
    `RedisQueue` (``jobs.Client(jobs.ClientConfig(queue=MemoryQueue(), registry=...))``)
    and its worker pool runs on it; `jobs.Scheduler` does not (it needs Redis).

    ``clock``: the queue's clock, seconds since the epoch (default `time.time`); pass a
    `ManualClock` to move time by hand: leases expire, delays and retry backoffs come
    due, records expire, all by that clock. (Blocking waits, `wait_for_work` and
    `as_finished`, still wait in real time, as their timeouts say.) The other keyword
    arguments are the `RedisQueueConfig` fields of the same names.

    Example::

        clock = jobs.testing.ManualClock()
        queue = jobs.testing.MemoryQueue(clock=clock)
        client = jobs.Client(jobs.ClientConfig(queue=queue, registry=registry))

    .. versionadded:: 1.3
    """

    def __init__(
        self,
        name: str = "default",
        *,
        clock: Callable[[], float] | None = None,
        max_lost_leases: int = 5,
        completed_ttl: timedelta = timedelta(days=1),
        failed_ttl: timedelta = timedelta(days=7),
        max_failed_jobs: int = 10_000,
        max_completed_jobs: int = 100_000,
        max_payload_bytes: int = 1 << 20,
        max_result_bytes: int = 1 << 20,
        _store: _Store | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        self._name = name
        self._settings: dict[str, Any] = {
            "max_lost_leases": max_lost_leases,
            "completed_ttl": completed_ttl,
            "failed_ttl": failed_ttl,
            "max_failed_jobs": max_failed_jobs,
            "max_completed_jobs": max_completed_jobs,
            "max_payload_bytes": max_payload_bytes,
            "max_result_bytes": max_result_bytes,
        }
        self._max_completed = max_completed_jobs
        self._max_payload = max_payload_bytes
        self._max_result = max_result_bytes
        self._store = _store or _Store(clock or time.time)
        self._state = self._store.queues.setdefault(
            name,
            QueueState(
                max_lost_leases=max_lost_leases,
                failed_ttl_ms=_codec.to_ms(failed_ttl),
                completed_ttl_ms=_codec.to_ms(completed_ttl),
                keep_failed=max_failed_jobs,
            ),
        )

    # -- what it is -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def address(self) -> str:
        """Where the queue lives, for messages."""
        return "memory"

    @property
    def max_payload_bytes(self) -> int:
        """The largest encoded payload `Client.enqueue` accepts."""
        return self._max_payload

    @property
    def max_result_bytes(self) -> int:
        """The largest encoded result stored."""
        return self._max_result

    @property
    def reply_timeout(self) -> float | None:
        """None: a call answers at once."""
        return None

    def __repr__(self) -> str:
        return f"<MemoryQueue {self._name!r}>"

    def sibling(self, name: str) -> MemoryQueue:
        """The queue called ``name`` in the same memory, with this queue's settings."""
        return MemoryQueue(name, _store=self._store, **self._settings)

    def set_unavailable(self, unavailable: bool) -> None:
        """Make every call raise `RedisUnavailable` (True) until set back (False).

        What a lost connection looks like to its callers, for testing how they ride it out.
        """
        with self._store.changed:
            self._store.unavailable = unavailable
            self._store.changed.notify_all()

    def close(self) -> None:
        """Nothing to release (the protocol's `close`)."""

    def _enter(self) -> tuple[QueueState, int]:
        """The state and the time, under the lock (held by the caller)."""
        if self._store.unavailable:
            raise RedisUnavailable(f"queue {self._name!r} made unavailable (set_unavailable)")
        return self._state, self._store.now()

    def _announce(self) -> None:
        """Wake every waiter: work may be there, or jobs may have finished."""
        self._store.changed.notify_all()

    # -- producer ---------------------------------------------------------------------------

    def enqueue(
        self,
        job_type: str,
        ids: Sequence[str],
        payloads: Sequence[bytes],
        config: JobConfig,
        *,
        declared: bool = True,
        strict: bool = False,
    ) -> list[str]:
        """Write new jobs (payloads already encoded); the id each payload's job has.

        As `RedisQueue.enqueue`: a unique key held by a live job gives that job's id,
        ``declared`` applies the job type's declared settings, ``strict`` refuses a type
        no worker pool declared with `UnknownJobType`.
        """
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        settings: list[Any] = list(job_args(config))
        letters = "".join(_LETTERS[n] for n in sorted(config.defaulted())) if declared else ""
        unique = "" if config.unique_key is None else f"unique:{config.unique_key}"
        unique_for = 0 if config.unique_for is None else _codec.to_ms(config.unique_for)
        with self._store.changed:
            state, now = self._enter()
            if letters or strict:
                found = state.declared(job_type)
                if found is None and strict:
                    raise UnknownJobType(
                        f"no worker pool declared job type {job_type!r} on queue {self.name!r} "
                        f"(a strict client refuses it: a typo, or no worker started yet)"
                    )
                for index, letter in enumerate("prtb"):
                    value = (found or {}).get(letter)
                    if isinstance(value, str) and letter in letters:
                        settings[index] = value
            flags = state.enqueue(
                now, job_type, settings, unique, unique_for, zip(ids, payloads, strict=True)
            )
            self._announce()
        return [
            job_id if isinstance(flag, int) else flag
            for job_id, flag in zip(ids, flags, strict=True)
        ]

    def get(self, job_id: str) -> Job:
        """The job's current record (`JobNotFound` if there is none)."""
        found = self.get_many([job_id])[0]
        if found is None:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return found

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The records of ``job_ids`` (None for a missing one)."""
        with self._store.changed:
            state, now = self._enter()
            records = [state.record(job_id, now) for job_id in job_ids]
            copies = [None if r is None else dict(r) for r in records]
            for job_id in job_ids:
                if job_id in state.damaged:
                    raise _codec.CorruptRecord(
                        f"the key of job {job_id!r} holds another type of value, not a job record"
                    )
        return [
            None if fields is None else _codec.decode_job(fields, self.name, lenient=True)
            for fields in copies
        ]

    def declare_types(self, declarations: Mapping[str, str]) -> None:
        """Publish job types' declared settings for producers."""
        with self._store.changed:
            state, _ = self._enter()
            state.types.update(declarations)

    def as_finished(self, job_ids: Sequence[str], timeout: float | None) -> Iterator[Job]:
        """Yield each job of ``job_ids`` once it is final, as `RedisQueue.as_finished`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = list(dict.fromkeys(job_ids))
        while waiting:
            with self._store.changed:
                jobs = self.get_many(waiting)
                done = []
                for job_id, job in zip(waiting, jobs, strict=True):
                    if job is None:
                        raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
                    if job.status.is_final:
                        done.append(job)
                if not done:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise WaitTimeout(
                            f"{len(waiting)} of {len(job_ids)} jobs not finished within "
                            f"{timeout} s (first: {sorted(waiting)[0]})",
                            job_ids=tuple(sorted(waiting)),
                        )
                    self._store.changed.wait(left)
                    continue
            for job in done:
                waiting.remove(job.id)
                yield job

    # -- admin -----------------------------------------------------------------------------

    def cancel(self, job_id: str, *, request: str | None = None) -> bool:
        """Cancel a job; True if cancelled now, False if it had finished already."""
        with self._store.changed:
            state, now = self._enter()
            code = state.cancel(now, job_id, request or secrets.token_hex(8), ANSWER_TTL_MS)
            self._announce()
        if code == -1:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return code > 0

    def retry(self, job_id: str, *, request: str | None = None) -> bool:
        """Put a failed or cancelled job back in the queue; False in another state."""
        with self._store.changed:
            state, now = self._enter()
            code = state.retry(now, job_id, request or secrets.token_hex(8), ANSWER_TTL_MS)
            self._announce()
        if code == -1:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return bool(code)

    def retry_failed(self, job_type: str | None = None, since_ms: int | None = None) -> int:
        """Put every failed job (of ``job_type``, failed since ``since_ms``) back; how many."""
        with self._store.changed:
            state, now = self._enter()
            failed = state.index["failed"]
            retried = 0
            for job_id in state.ordered("failed"):
                if since_ms is not None and failed[job_id] < since_ms:
                    continue
                record = state.record(job_id, now)
                if job_type is not None and (record is None or record.get("type") != job_type):
                    continue
                retried += state.retry(now, job_id, "", 0) == 1
            self._announce()
        return retried

    def purge(self, status: JobStatus | str) -> int:
        """Delete every job in ``status`` (not processing); how many."""
        job_status = _status(status)
        if job_status is JobStatus.PROCESSING:
            raise ConfigError("status must not be processing: running jobs cannot be purged")
        with self._store.changed:
            state, _ = self._enter()
            return state.purge(job_status.value)

    def list_jobs(self, status: JobStatus | str, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs in one status, in the order `Client.list_jobs` documents."""
        job_status = _status(status)
        if limit < 0 or offset < 0:
            raise ConfigError(f"limit and offset must be >= 0, got {limit} and {offset}")
        with self._store.changed:
            state, _ = self._enter()
            ids = state.ordered(job_status.value, reverse=job_status.is_final)
            # A damaged key in the index is no job to show (the next script sets it aside).
            ids = [i for i in ids[offset : offset + limit] if i not in state.damaged]
        found = self.get_many(ids)
        return [job for job in found if job is not None]

    # -- monitor ---------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        """The queue's counts."""
        with self._store.changed:
            state, _ = self._enter()
            counts = state.stats
            return QueueStats(
                total_jobs=counts["total"],
                pending_jobs=len(state.index["pending"]),
                scheduled_jobs=len(state.index["scheduled"]),
                processing_jobs=len(state.index["processing"]),
                completed_jobs=counts["completed"],
                failed_jobs=counts["failed"],
                cancelled_jobs=counts["cancelled"],
                last_processed=_codec.from_ms(state.last_processed),
                retried_attempts=counts["retried"],
                lost_leases=counts["lost_leases"],
                rejected_writes=counts["rejected"],
                damaged_records=counts["damaged"],
            )

    def history(self, minutes: int = HISTORY_MINUTES) -> QueueHistory:
        """Per-minute counts over the last ``minutes`` minutes, the current one last."""
        if not 1 <= minutes <= HISTORY_MINUTES:
            raise ConfigError(f"minutes must be in 1..{HISTORY_MINUTES}, got {minutes!r}")
        with self._store.changed:
            state, now = self._enter()
            current = now // 60_000
            rows = [
                (minute, [state.history[minute, f] for f in _HISTORY_FIELDS])
                for minute in range(current - minutes + 1, current + 1)
            ]
        return QueueHistory(
            minutes=tuple(
                MinuteCounts(
                    minute=cast("Any", _codec.from_ms(minute * 60_000)),
                    **dict(zip(_HISTORY_FIELDS, row, strict=True)),
                )
                for minute, row in rows
            )
        )

    def workers(self) -> list[WorkerInfo]:
        """The live worker pools of this queue."""
        with self._store.changed:
            state, now = self._enter()
            live = state.live_workers(now)
        found = []
        for pool_id, record in live:
            info = json.loads(record["info"])
            found.append(
                WorkerInfo(
                    id=pool_id,
                    hostname=str(info["hostname"]),
                    pid=int(info["pid"]),
                    num_workers=int(info["num_workers"]),
                    in_flight=int(info["in_flight"]),
                    started_at=cast("Any", _codec.from_ms(record["started_at"])),
                    last_seen=cast("Any", _codec.from_ms(record["last_seen"])),
                )
            )
        return sorted(found, key=lambda w: w.started_at)

    def server_time_ms(self) -> int:
        """The queue's clock, in ms since the epoch."""
        return self._store.now()

    def warn_if_evicting(self, logger: logging.Logger) -> None:
        """Nothing to warn about: memory evicts nothing."""

    def advance(self, seconds: float | timedelta) -> tuple[int, int]:
        """Let time pass: move the `ManualClock` ahead, then reap, in one step.

        What a stalled pool's lease, or a delay or retry backoff, looks like after that
        long: expired leases go back to the queue (or fail, past ``max_lost_leases``),
        and pools waiting for work are woken if a job became due. No heartbeat can come
        in between. Returns what the reap did: (requeued, failed).

        Raises:
            ConfigError: the queue's clock is not a `ManualClock`.
        """
        clock = self._store.clock
        if not isinstance(clock, ManualClock):
            raise ConfigError("advance needs a MemoryQueue built with clock=ManualClock()")
        with self._store.changed:
            clock.advance(seconds)
            return self.reap()

    def advance_scheduled(self, by: timedelta) -> int:
        """Make every scheduled job due ``by`` earlier (`jobs.testing.advance`); how many."""
        with self._store.changed:
            state, _ = self._enter()
            moved = state.advance(_codec.to_ms(by))
            self._announce()
        return moved

    # -- worker side --------------------------------------------------------------------------

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first)."""
        fetched = self.exchange((), count, lease, request=request or secrets.token_hex(8))[1]
        assert fetched is not None
        return fetched

    def write(self, outcomes: Sequence[Outcome]) -> list[Written]:
        """Record finished attempts, each fenced by its lease; one reply per outcome."""
        return self.exchange(outcomes, 0, None)[0]

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
            for index, outcome in enumerate(outcomes):
                if isinstance(outcome, Completed):
                    held = outcome.leased
                    ok = state.complete(now, held.job_id, held.token, outcome.result)
                    written[index] = Written(ok, "completed", now, 0)
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
                fetched = Fetched(now, next_due, [_leased(r) for r in records])
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

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[WorkerQueue] = ()) -> bool:
        """Block until woken or work is there, up to ``timeout`` seconds (real time).

        Queues of ``also`` from another `MemoryQueue` family cannot be waited on: True
        at once, so that the pool polls them.
        """
        states = [self._state]
        for other in also:
            if not isinstance(other, MemoryQueue) or other._store is not self._store:
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


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise ConfigError(f"status must be one of {names}, got {status!r}") from None
