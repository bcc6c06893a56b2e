"""The registered cron jobs: planning each from its claim in Redis, firing, announcing.

Each fire is one Lua script (``jobs/queue/lua/cron_fire.lua``) that claims the fire time
and enqueues its job together: the claim is the cron job's last fire time, kept in Redis,
and a fire time at or before it is refused, so whichever scheduler comes first enqueues
it and the others learn they were late. The job id is ``cron:<cron id>:<fire time in ms>``.

A schedule that raises, or an error reply about one cron job's data, is logged once per
distinct error and that cron job is retried after `SCHEDULE_RETRY`; the others go on.

Shared state. For each cron job the hash ``{prefix:queue}:cron:<id>`` holds
``last_fire``, ``last_job_id`` and ``next_run`` (ms since the epoch) and what the
schedulers announce (``schedule``, ``job_type``, ``enabled``, ``misfire``, ``tz``; every
fire sets ``enabled`` again, as a scheduler runs it whatever a peer announced);
`RedisQueue.crons` lists the enabled ones by next run, without any scheduler running.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import redis

from jobs import _codec
from jobs.config import JobConfig
from jobs.errors import PayloadError, RedisUnavailable, ReplicationError
from jobs.schedule._planner import STATE_TTL, Planner, from_ms, parse_ms, to_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs.queue.redis_queue import RedisQueue
    from jobs.schedule._clock import AnyLogger
    from jobs.schedule.cron_job import CronJob

#: How long a cron job whose schedule failed (or whose state Redis refused) waits before
#: it is tried again; the other cron jobs go on meanwhile.
SCHEDULE_RETRY = timedelta(seconds=10)


def _isolated(exc: Exception) -> bool:
    """Whether an error concerns one cron job (its schedule, its data) rather than Redis."""
    if isinstance(exc, redis.RedisError):
        # A plain error reply is about this call's keys (a damaged state hash); its
        # subclasses (READONLY, cluster states ...) and connection errors are about the
        # server: the round fails and the thread backs off.
        return type(exc) is redis.ResponseError
    return True


def encode_payload(cron_job: CronJob, limit: int) -> bytes:
    """The payload of ``cron_job`` as the queue stores it.

    Raises:
        PayloadError: it is not JSON, or is over ``limit`` bytes (max_payload_bytes).
    """
    payload = _codec.dumps(cron_job.payload, f"payload of cron job {cron_job.id!r}")
    if len(payload) > limit:
        raise PayloadError(
            f"payload of cron job {cron_job.id!r} is {len(payload)} bytes, "
            f"over max_payload_bytes ({limit})"
        )
    return payload


@attrs.define
class Entry:
    """One registration and its plan; mutated only under `Firing.lock`."""

    job: CronJob
    payload: bytes
    #: The fire time to enqueue next (in the past for a pending catch-up); None: never.
    next_fire: datetime | None = None
    #: Planned against the state in Redis (False: from the schedule alone, or not yet).
    planned: bool = False
    #: ``next_fire`` is the one catch-up of a ``run_once`` cron job.
    catch_up: bool = False
    ttl: timedelta = STATE_TTL
    #: When `Scheduler.enable` last enabled it: earlier fire times were not owed here.
    resumed: datetime | None = None
    #: The last error of its schedule or state ("Type: message"); None when it works.
    error: str | None = None
    #: No new try before this instant after an error.
    retry_at: datetime | None = None


class Firing:
    """A scheduler's cron jobs by id, and what a round does to each: plan, fire, announce.

    Args:
        queue: the queue that keeps the claims and receives the jobs.
        planner: the fire-time arithmetic.
        logger: where failures and fires are reported.
        extra: the ``extra`` fields of those records.
    """

    def __init__(
        self,
        queue: RedisQueue,
        planner: Planner,
        logger: AnyLogger,
        extra: dict[str, object],
    ) -> None:
        self._queue = queue
        self._planner = planner
        self._logger = logger
        self._extra = extra
        #: The registrations by cron id, in the order they were first registered.
        self.entries: dict[str, Entry] = {}
        # Guards the registrations and plans, never held while a schedule computes: each
        # fire is claimed under it after checking the registration is unchanged, so that
        # once disable() or unregister() returns, the cron job fires no more.
        self.lock = threading.RLock()

    def active(self, now: datetime) -> list[tuple[Entry, CronJob]]:
        """The enabled registrations not waiting to retry after an error, with their job."""
        with self.lock:
            found = []
            for entry in self.entries.values():
                if not entry.job.enabled:
                    continue
                if entry.retry_at is not None:
                    if entry.retry_at > now:
                        continue
                    entry.retry_at, entry.planned = None, False
                found.append((entry, entry.job))
            return found

    def current(self, entry: Entry, job: CronJob) -> bool:
        """Whether ``job`` is still this registration, enabled (call under the lock)."""
        return self.entries.get(job.id) is entry and entry.job is job and job.enabled

    def guarded(
        self,
        entry: Entry,
        job: CronJob,
        now: datetime,
        action: Callable[[Entry, CronJob, datetime], None],
    ) -> None:
        """Run one cron job's part of a round; its own failure does not stop the others."""
        try:
            action(entry, job, now)
        except Exception as exc:
            if not _isolated(exc):
                raise
            self.failed(entry, job, now, exc)
            return
        if action != self.fire_due:
            # Planned is not yet working: a cron job that fails when it fires is planned
            # again each retry, and would be logged as working, then as failing anew.
            return
        with self.lock:
            error, entry.error = entry.error, None
        if error is not None:
            self._logger.info(
                "cron job %r works again (after %s)",
                job.id,
                error,
                extra={**self._extra, "job_type": job.job_type},
            )

    def failed(self, entry: Entry, job: CronJob, now: datetime, exc: Exception) -> None:
        """Log a cron job's failure (in full the first time) and retry it later."""
        error = f"{type(exc).__name__}: {exc}"
        with self.lock:
            repeated = entry.error == error
            entry.error, entry.planned, entry.retry_at = error, False, now + SCHEDULE_RETRY
        extra = {**self._extra, "job_type": job.job_type}
        if repeated:  # logged in full when it first happened
            self._logger.debug("cron job %r failed again: %s", job.id, error, extra=extra)
            return
        self._logger.error(
            "cron job %r failed (%s); it is skipped and tried again in %.0f s, "
            "the other cron jobs go on",
            job.id,
            error,
            SCHEDULE_RETRY.total_seconds(),
            exc_info=exc,
            extra=extra,
        )

    def plan(self, entry: Entry, job: CronJob, now: datetime) -> None:
        """Plan from the claim in Redis, then publish the plan."""
        state = self._queue.cron_state(job.id)
        plan = self._planner.replan(
            job,
            now,
            parse_ms(state.get("last_fire")),
            parse_ms(state.get("next_run")),
            entry.resumed,
        )
        with self.lock:
            if self.current(entry, job):
                entry.next_fire, entry.catch_up, entry.ttl = plan.next_fire, plan.catch_up, plan.ttl
                entry.planned = True
                self.announce(entry)

    def plan_best_effort(self, entry: Entry, job: CronJob, now: datetime) -> None:
        """`plan`, or from the schedule alone if Redis fails (the thread plans it again)."""
        try:
            self.guarded(entry, job, now, self.plan)
        except (redis.RedisError, RedisUnavailable) as exc:
            extra = {**self._extra, "job_type": job.job_type}
            try:
                plan = self._planner.replan(job, now, None, None, entry.resumed)
            except Exception as schedule_exc:
                self.failed(entry, job, now, schedule_exc)
                return
            with self.lock:
                if self.current(entry, job) and not entry.planned:
                    # The thread plans it again from Redis; until then next_run shows this.
                    entry.next_fire, entry.catch_up, entry.ttl = (
                        plan.next_fire,
                        plan.catch_up,
                        plan.ttl,
                    )
            self._logger.warning(
                "cron job %r: cannot read its state (%s: %s); planned from its schedule alone",
                job.id,
                type(exc).__name__,
                exc,
                extra=extra,
            )

    def fire_due(self, entry: Entry, job: CronJob, now: datetime) -> None:
        """Enqueue every fire time of ``job`` due at ``now``, applying the misfire policy."""
        planner = self._planner
        extra: dict[str, object] = {**self._extra, "job_type": job.job_type}
        while True:
            with self.lock:
                if not self.current(entry, job):
                    return
                planned, catch_up = entry.next_fire, entry.catch_up
            if planned is None or planned > now:
                break
            # The schedule is computed without the lock (it may be slow); the fire is
            # claimed under it, and only if the registration did not change meanwhile.
            fire, catch_up = planner.resolve_missed(job, planned, catch_up, now)
            following = None if fire is None or fire > now else planner.next(job, fire)
            with self.lock:
                if not self.current(entry, job) or entry.next_fire != planned:
                    return
                if fire is None or fire > now:
                    entry.next_fire, entry.catch_up = fire, catch_up
                    break
                fired, last_ms = self._fire(job, entry, fire, following, extra)
                entry.next_fire, entry.catch_up = following, False
            if fired:
                self._logger.debug(
                    "cron job %r fired for %s%s",
                    job.id,
                    fire.isoformat(),
                    " (catch-up)" if catch_up else "",
                    extra=extra,
                )
            else:
                self._logger.debug(
                    "cron job %r: %s already fired by another scheduler (last fire %s)",
                    job.id,
                    fire.isoformat(),
                    from_ms(last_ms).isoformat(),
                    extra=extra,
                )
            last = from_ms(last_ms)
            if last > fire:  # a peer is ahead: go on from its last fire
                ahead = planner.next(job, last)
                with self.lock:
                    if self.current(entry, job) and entry.next_fire == following:
                        entry.next_fire = ahead
        with self.lock:
            if self.current(entry, job) and entry.next_fire is None:
                self.announce(entry)  # the schedule ended: take it off the listing

    def _fire(
        self,
        job: CronJob,
        entry: Entry,
        fire: datetime,
        following: datetime | None,
        extra: dict[str, object],
    ) -> tuple[bool, int]:
        """Claim ``fire`` and enqueue its job in Redis (under the lock)."""
        fire_ms = to_ms(fire)
        job_id = f"cron:{job.id}:{fire_ms}"
        extra["job_id"] = job_id
        try:
            return self._queue.fire_cron(
                job.id,
                fire_ms,
                None if following is None else to_ms(following),
                (job_id, job.job_type, entry.payload, job.config or JobConfig()),
                entry.ttl,
            )
        except ReplicationError as exc:  # written on the master: it did fire
            self._logger.warning("cron job %r: %s", job.id, exc, extra=extra)
            return True, fire_ms

    def announce(self, entry: Entry) -> None:
        """Publish the registration and its next run for `RedisQueue.crons` (best effort)."""
        job = entry.job
        fields = {
            "schedule": repr(job.schedule),
            "job_type": job.job_type,
            "enabled": "1" if job.enabled else "0",
            "misfire": job.misfire,
            "tz": str(self._planner.tz),
        }
        next_fire = entry.next_fire if job.enabled else None
        try:
            self._queue.announce_cron(
                job.id, fields, None if next_fire is None else to_ms(next_fire), entry.ttl
            )
        except (redis.RedisError, RedisUnavailable) as exc:
            self._logger.warning(
                "cron job %r: cannot publish its registration (%s: %s)",
                job.id,
                type(exc).__name__,
                exc,
                extra={**self._extra, "job_type": job.job_type},
            )
