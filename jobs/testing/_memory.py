"""`MemoryQueue`: `RedisQueue`'s twin in memory, for tests (single process, no server).

Its rules are the Lua scripts' (`jobs.testing._memory_state`, checked against the
scripts by the model test), its API the one a `Client` and a worker pool use
(`jobs._queue_protocol.JobQueue`), and its clock injectable (`ManualClock`). Assembled
like `RedisQueue`: `MemoryBase` (``_memory_base``: clock, lock, state), the worker side
(``_memory_worker``), and here the producer, admin and monitor calls.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, cast

from jobs import _codec, _record
from jobs.errors import ConfigError, JobNotFound, UnknownJobType, WaitTimeout
from jobs.job import JobStatus, MinuteCounts, QueueHistory, QueueStats, WorkerInfo
from jobs.queue._base import (
    _HISTORY_FIELDS,
    _LETTERS,
    ANSWER_TTL_MS,
    HISTORY_MINUTES,
)
from jobs.queue._wire import declared_queue, job_args
from jobs.testing._memory_base import ManualClock
from jobs.testing._memory_worker import MemoryWorkerSide
from jobs.worker._protocol import LeaseState

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import timedelta

    from jobs._limits import TypeLimits
    from jobs.config import JobConfig
    from jobs.job import Job

_LEASE_STATES = {1: LeaseState.HELD, 2: LeaseState.CANCELLED, 0: LeaseState.LOST}


logger = logging.getLogger("jobs.testing")

#: Why `MemoryQueue` refuses ``depends_on`` and flows (`jobs.group`, `jobs.chain`).
_NO_FLOWS = (
    "depends_on, groups and chains need a RedisQueue: MemoryQueue does not model "
    "dependencies (use the jobs.testing fixtures' private Redis for such tests)"
)


class MemoryQueue(MemoryWorkerSide):
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

    .. versionadded:: 0.1
    """

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
        fresh: bool = False,
    ) -> list[str]:
        """Write new jobs (payloads already encoded); the id each payload's job has.

        As `RedisQueue.enqueue`: a unique key held by a live job gives that job's id,
        ``declared`` applies the job type's declared settings, ``strict`` refuses a type
        no worker pool declared with `UnknownJobType`. ``fresh`` changes nothing here:
        every id is checked, as it costs nothing in memory.
        """
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        if config.depends_on:
            raise ConfigError(_NO_FLOWS)
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

    def enqueue_flow(self, profiles: Sequence[Any], jobs: Sequence[Any]) -> None:
        """Refused: dependencies, groups and chains live in Redis's scripts only.

        Raises:
            ConfigError: always.
        """
        raise ConfigError(_NO_FLOWS)

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
            None if fields is None else _record.decode_job(fields, self.name, lenient=True)
            for fields in copies
        ]

    def publish_limits(self, declared: Mapping[str, TypeLimits]) -> int:
        """Not modelled: rate limits and concurrency caps are enforced by fetch.lua only.

        A pool whose registry declares limits runs on a MemoryQueue without them; this
        logs a warning once, naming the types, rather than pretending to enforce them.
        """
        limited = sorted(name for name, limits in declared.items() if limits)
        if limited and not self._limits_warned:
            self._limits_warned = True
            logger.warning(
                "MemoryQueue %r does not enforce rate limits or concurrency caps "
                "(declared for %s): test them against a RedisQueue",
                self.name,
                ", ".join(limited),
                extra={"queue": self.name},
            )
        return 0

    def declare_types(self, declarations: Mapping[str, str]) -> None:
        """Publish job types' declared settings for producers."""
        with self._store.changed:
            state, _ = self._enter()
            state.types.update(declarations)

    def declared_queue(self, job_type: str) -> str | None:
        """The queue ``job_type``'s published declaration names, as `RedisQueue`'s."""
        with self._store.changed:
            state, _ = self._enter()
            return declared_queue(state.types.get(job_type))

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


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise ConfigError(f"status must be one of {names}, got {status!r}") from None
