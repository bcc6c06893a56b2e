"""`Scheduler` and `CronJob`: periodic jobs, each fire time enqueued exactly once.

Any number of schedulers, in any number of processes and hosts, may run the same cron
jobs against one queue. There is no leader and no lock that can expire: each fire is one
Lua script (``jobs/queue/lua/cron_fire.lua``) that claims the fire time and enqueues its job
together. The claim is the cron job's last fire time, kept in Redis; a fire time at or
before it is refused, so whichever scheduler comes first enqueues it and the others learn
they were late. The job id is deterministic, ``cron:<cron id>:<fire time in ms>``.

Timing. The scheduler thread sleeps until the earliest next fire time (an `Event` wait,
so `Scheduler.stop` is immediate and `Scheduler.register` re-plans at once), but never
longer than `MAX_WAIT`. Its clock is the Redis server's: Redis ``TIME`` is read at start
and before each round that fires, and carried forward in between by the monotonic
clock, so schedulers on hosts with skewed clocks fire at the same instants and a step of
the host's clock (NTP, a VM resumed) changes nothing. A suspended host stops the
monotonic clock but not the wall clock: when the two disagree, Redis is asked again.

Failures. A schedule that raises (a custom one may), or an error reply about one cron
job's data, is logged once per distinct error and that cron job is retried after
`SCHEDULE_RETRY`; the others go on. Redis being unreachable fails the round, which the
thread retries with a back-off. An exception that is not an `Exception` (``SystemExit``
from a library) ends the thread: it is logged as critical, and `Scheduler.next_run`
raises until `Scheduler.start` runs the thread again.

Missed fire times. A fire time more than ``misfire_grace`` late (plus up to `WAKE_SLACK`
of the scheduler's own wake-up latency) counts as missed: the scheduler was not running,
or could not reach Redis, when it was due. With ``misfire="skip"`` (the default) missed
fire times are not enqueued; with ``misfire="run_once"`` the latest of them is enqueued
once, as a catch-up, and the others are not. A new cron job with no state in Redis starts
with the fire times from ``now - misfire_grace`` on, so a scheduler that starts a few
seconds after a fire time still fires it.

Shared state. For each cron job the hash ``{prefix:queue}:cron:<id>`` holds
``last_fire``, ``last_job_id`` and ``next_run`` (ms since the epoch) and what the
schedulers announce (``schedule``, ``job_type``, ``enabled``, ``misfire``, ``tz``; every
fire sets ``enabled`` again, as a scheduler runs it whatever a peer announced);
`RedisQueue.crons` lists the enabled ones by next run, without any scheduler running.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import attrs
import redis

from jobs import _codec
from jobs._loops import Loop
from jobs.client import Client
from jobs.config import JobConfig
from jobs.errors import ConfigError, JobsError, PayloadError, RedisUnavailable, ReplicationError
from jobs.schedule.cron_job import CronJob as CronJob
from jobs.schedule.cron_job import Misfire as Misfire
from jobs.schedule.schedules import _resolve_tz

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable
    from types import TracebackType

    from jobs.queue.redis_queue import RedisQueue

#: A logger the scheduler accepts.
AnyLogger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"

#: Shortest life of a cron job's state in Redis, refreshed on every fire and announce.
STATE_TTL = timedelta(days=30)
#: Longest sleep of the scheduler thread, in seconds (see the module docstring).
MAX_WAIT = 60.0
#: Lateness the scheduler allows itself on top of ``misfire_grace``: its own wake-up
#: latency must not turn a fire into a missed one, even with ``misfire_grace=0``.
WAKE_SLACK = timedelta(seconds=1)
#: How long `Scheduler.stop` waits for the thread (a round blocked on Redis ends by the
#: client's socket timeout).
STOP_TIMEOUT = 10.0
#: How long a cron job whose schedule failed (or whose state Redis refused) waits before
#: it is tried again; the other cron jobs go on meanwhile.
SCHEDULE_RETRY = timedelta(seconds=10)
#: Disagreement between the wall and monotonic clocks since the last Redis ``TIME`` that
#: means the host's clock was stepped or the host was suspended, in seconds.
CLOCK_JUMP = 1.0
#: Missed fire times counted one by one before a binary search finds the latest.
_MISSED_WALK = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)
_QUEUE_METHODS = ("fire_cron", "cron_state", "announce_cron", "server_time_ms")


def _to_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // _MS


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _parse_ms(raw: str | None) -> int | None:
    try:
        return None if not raw else int(raw)
    except ValueError:  # a corrupt field only loses the claim's history, not the schedule
        return None


def _isolated(exc: Exception) -> bool:
    """Whether an error concerns one cron job (its schedule, its data) rather than Redis."""
    if isinstance(exc, redis.RedisError):
        # A plain error reply is about this call's keys (a damaged state hash); its
        # subclasses (READONLY, cluster states ...) and connection errors are about the
        # server: the round fails and the thread backs off.
        return type(exc) is redis.ResponseError
    return True


@attrs.define
class _Entry:
    """One registration and its plan; mutated only under the scheduler's lock."""

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


@attrs.frozen
class _Plan:
    next_fire: datetime | None
    catch_up: bool
    ttl: timedelta


def _grace(value: object) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ConfigError(
                f"misfire_grace must be a finite number of seconds, got {value!r}"
            ) from None
    else:
        raise ConfigError(
            f"misfire_grace must be a number of seconds or a timedelta, got {value!r}"
        )
    if seconds < timedelta(0):
        raise ConfigError(f"misfire_grace must be >= 0, got {seconds.total_seconds()!r} s")
    return seconds


class Scheduler:
    """Enqueues the jobs of registered `CronJob` s at their fire times, from a background thread.

    Example::

        scheduler = jobs.Scheduler(client, tz="Europe/Berlin")
        scheduler.register(jobs.CronJob(id="nightly", schedule=jobs.Daily(2, 0),
                                        job_type="cleanup"))
        with scheduler:            # start(); ...; stop()
            ...

    Run as many schedulers with the same cron jobs as you like (one per worker process is
    fine): each fire time is enqueued exactly once. Methods are thread-safe.

    Args:
        client: a `Client` (or a `RedisQueue`) whose queue receives the jobs.
        logger: a logger to use instead of ``jobs.schedule.scheduler``.
        tz: the zone of schedules that name none: an IANA name or a tzinfo.
        misfire_grace: seconds (or a timedelta, >= 0) a fire may be late and still count
            as on time rather than missed.
        clock: ``() -> aware datetime``, for tests; default: the local clock corrected by
            the Redis server's.

    Raises:
        ConfigError: a bad argument, with a message naming it.

    .. versionadded:: 1.0
    """

    def __init__(
        self,
        client: Client | RedisQueue,
        logger: AnyLogger | None = None,
        tz: str | tzinfo | None = "UTC",
        misfire_grace: float | timedelta = 10,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        queue = client.queue if isinstance(client, Client) else client
        if not all(callable(getattr(queue, name, None)) for name in _QUEUE_METHODS):
            raise ConfigError(
                "client must be a jobs.Client or a jobs.RedisQueue (the scheduler keeps its "
                f"state in Redis), got {type(client).__name__} on {type(queue).__name__}"
            )
        if logger is not None and not isinstance(logger, logging.Logger | logging.LoggerAdapter):
            raise ConfigError(f"logger must be a logging.Logger, got {type(logger).__name__}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable, got {type(clock).__name__}")
        self._queue: RedisQueue = queue
        self._logger: AnyLogger = logger or logging.getLogger("jobs.schedule.scheduler")
        self.tz: tzinfo = _resolve_tz(tz, "tz") or UTC
        self.misfire_grace: timedelta = _grace(misfire_grace)
        self._clock = clock
        #: Seconds to add to time.time() to get the Redis server's time (for the log).
        self._offset = 0.0
        #: (Redis time, monotonic time, wall time) in seconds at the last Redis TIME.
        self._anchor: tuple[float, float, float] | None = None
        self._sync_due = True
        self._entries: dict[str, _Entry] = {}
        # Guards the registrations and plans, never held while a schedule computes: each
        # fire is claimed under it after checking the registration is unchanged, so that
        # once disable() or unregister() returns, the cron job fires no more.
        self._lock = threading.RLock()
        # One round at a time (the thread's and run_once() calls of a custom loop).
        self._round = threading.Lock()
        self._changed = threading.Event()
        # Guards only the thread's life, so that stop() never waits for a round to end.
        self._life = threading.Lock()
        self._loop: Loop | None = None
        #: What killed the thread ("Type: message"), if something not an Exception did.
        self._death: str | None = None
        self._extra: dict[str, object] = {"queue": queue.name}

    def __repr__(self) -> str:
        return f"<Scheduler queue={self._queue.name!r} cron_jobs={len(self._entries)}>"

    # -- registrations ---------------------------------------------------------------

    def register(self, cron_job: CronJob) -> None:
        """Add a cron job, or replace the one with the same id (re-planned at once).

        Raises:
            PayloadError: the payload is not JSON, or is over the queue's max_payload_bytes.
            ConfigError: not a `CronJob`, or its schedule fails to compute a fire time.
        """
        if not isinstance(cron_job, CronJob):
            raise ConfigError(f"cron_job must be a jobs.CronJob, got {type(cron_job).__name__}")
        payload = _codec.dumps(cron_job.payload, f"payload of cron job {cron_job.id!r}")
        limit: int = self._queue.config.max_payload_bytes
        if len(payload) > limit:
            raise PayloadError(
                f"payload of cron job {cron_job.id!r} is {len(payload)} bytes, "
                f"over max_payload_bytes ({limit})"
            )
        self._check_schedule(cron_job)
        entry = _Entry(cron_job, payload)
        with self._lock:
            self._entries[cron_job.id] = entry
            if not cron_job.enabled:
                self._announce(entry)
        if cron_job.enabled:
            self._plan_best_effort(entry, cron_job, self._now())
        self._changed.set()

    def enable(self, cron_id: str) -> bool:
        """Let a registered cron job fire again; False if the id is unknown here.

        The fire times it missed while disabled are skipped, whatever its ``misfire``:
        resuming a paused job does not run it at once for the pause.
        """
        with self._lock:
            entry = self._entries.get(cron_id)
            if entry is None:
                return False
            job = None
            if not entry.job.enabled:
                job = entry.job = attrs.evolve(entry.job, enabled=True)
                now = entry.resumed = self._now()
                entry.planned, entry.error, entry.retry_at = False, None, None
        if job is not None:
            self._plan_best_effort(entry, job, now)
        self._changed.set()
        return True

    def disable(self, cron_id: str) -> bool:
        """Stop a registered cron job from firing (it stays registered); False if unknown."""
        with self._lock:
            entry = self._entries.get(cron_id)
            if entry is None:
                return False
            if entry.job.enabled:
                entry.job = attrs.evolve(entry.job, enabled=False)
                entry.next_fire, entry.planned, entry.catch_up = None, False, False
                self._announce(entry)
        return True

    def unregister(self, cron_id: str) -> bool:
        """Remove a cron job from this scheduler; False if the id is unknown here.

        Its state in Redis (the claim) stays, for other schedulers that still run it.
        """
        with self._lock:
            entry = self._entries.pop(cron_id, None)
            if entry is None:
                return False
            entry.job = attrs.evolve(entry.job, enabled=False)
            entry.next_fire = None
            self._announce(entry)
        return True

    def list(self) -> builtins.list[CronJob]:
        """This scheduler's registrations, in the order they were first registered."""
        with self._lock:
            return [entry.job for entry in self._entries.values()]

    def next_run(self, cron_id: str) -> datetime | None:
        """When the cron job fires next here (UTC); None if unknown, disabled or ended.

        A pending ``run_once`` catch-up shows as its (past) fire time.

        Raises:
            JobsError: the scheduler thread died of something that is not an `Exception`
                (``SystemExit`` ...), so nothing fires here until `start` runs it again.
        """
        with self._lock:
            if self._death is not None:
                raise JobsError(
                    f"the scheduler thread died ({self._death}): nothing fires until "
                    "start() runs it again"
                )
            entry = self._entries.get(cron_id)
            if entry is None or not entry.job.enabled:
                return None
            return entry.next_fire

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread and return at once; a no-op if it runs.

        The thread first re-plans every cron job from its state in Redis, enqueueing a
        pending ``run_once`` catch-up.
        """
        with self._life:
            if self._loop is not None and self._loop.is_alive():
                return
            with self._lock:
                for entry in self._entries.values():
                    entry.planned, entry.retry_at = False, None
                self._sync_due = True
                self._death = None
                count = len(self._entries)

            def step() -> float:
                return self._guarded_step(loop)

            loop = Loop(
                "jobs-scheduler",
                step,
                cast("logging.Logger", self._logger),
                wake=self._changed.set,
                extra=self._extra,
            )
            self._loop = loop
            loop.start()
        self._logger.info(
            "scheduler started with %d cron job%s",
            count,
            "" if count == 1 else "s",
            extra=self._extra,
        )

    def stop(self) -> None:
        """Stop the thread: at once, or after the round in progress; a no-op if not running."""
        with self._life:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop.stop(STOP_TIMEOUT):
            self._logger.info("scheduler stopped", extra=self._extra)
        else:
            self._logger.warning(
                "scheduler thread still busy after %.0f s; left to end by itself",
                STOP_TIMEOUT,
                extra=self._extra,
            )

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _guarded_step(self, loop: Loop) -> float:
        try:
            return self._step(loop)
        except Exception:
            raise  # the loop logs it and tries again after a back-off
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised in this thread (a library calling
            # sys.exit()) ends it, as it would end any thread, but not silently.
            loop.stopping.set()
            with self._lock:
                self._death = f"{type(exc).__name__}: {exc}"
            self._logger.critical(
                "scheduler thread died of %s: %s; no cron job fires here until start() "
                "is called again",
                type(exc).__name__,
                exc,
                exc_info=exc,
                extra=self._extra,
            )
            return 0.0

    def _step(self, loop: Loop) -> float:
        self._changed.clear()
        # Loop.stop sets `stopping` before it wakes us: checking after the clear means a
        # stop is never slept through.
        if loop.stopping.is_set():
            return 0.0
        delay = self.run_once()
        if not loop.stopping.is_set():
            self._changed.wait(delay)
        return 0.0

    def run_once(self, now: datetime | None = None) -> float:
        """Plan what needs planning and enqueue every fire time due at ``now``.

        This is one round of the scheduler thread, for tests and custom loops. A cron job
        whose schedule fails is logged and skipped (tried again after `SCHEDULE_RETRY`);
        the others go on.

        Args:
            now: an aware datetime; None means the scheduler's clock.

        Returns:
            Seconds until the next fire time (at most `MAX_WAIT`).

        Raises:
            redis.RedisError: Redis failed; what was fired stays fired, the rest is retried
                by the next round.
        """
        explicit = now is not None
        own_clock = not explicit and self._clock is None
        with self._round:
            synced = False
            if own_clock and (self._sync_due or self._clock_jumped()):
                self._sync_clock()
                synced, self._sync_due = True, False
            current = self._aware(now, "now") if now is not None else self._now()
            for entry, job in self._active(current):
                if not entry.planned:
                    self._guarded(entry, job, current, self._plan)
            due = [
                (entry, job)
                for entry, job in self._active(current)
                if entry.next_fire is not None and entry.next_fire <= current
            ]
            if due and own_clock and not synced:
                self._sync_clock()
                current = self._now()
            for entry, job in due:
                self._guarded(entry, job, current, self._fire_due)
            with self._lock:
                upcoming = [
                    e.retry_at if e.retry_at is not None else e.next_fire
                    for e in self._entries.values()
                    if e.job.enabled
                ]
        wake = [instant for instant in upcoming if instant is not None]
        if not wake:
            return MAX_WAIT
        # Measured after the round's round trips, so that the thread does not wake late.
        reference = current if explicit else self._now()
        return min(max((min(wake) - reference).total_seconds(), 0.0), MAX_WAIT)

    # -- internals -------------------------------------------------------------------

    def _active(self, now: datetime) -> builtins.list[tuple[_Entry, CronJob]]:
        """The enabled registrations not waiting to retry after an error, with their job."""
        with self._lock:
            found = []
            for entry in self._entries.values():
                if not entry.job.enabled:
                    continue
                if entry.retry_at is not None:
                    if entry.retry_at > now:
                        continue
                    entry.retry_at, entry.planned = None, False
                found.append((entry, entry.job))
            return found

    def _current(self, entry: _Entry, job: CronJob) -> bool:
        """Whether ``job`` is still this registration, enabled (call under the lock)."""
        return self._entries.get(job.id) is entry and entry.job is job and job.enabled

    def _guarded(
        self,
        entry: _Entry,
        job: CronJob,
        now: datetime,
        action: Callable[[_Entry, CronJob, datetime], None],
    ) -> None:
        """Run one cron job's part of a round; its own failure does not stop the others."""
        try:
            action(entry, job, now)
        except Exception as exc:
            if not _isolated(exc):
                raise
            self._failed(entry, job, now, exc)
            return
        with self._lock:
            error, entry.error = entry.error, None
        if error is not None:
            self._logger.info(
                "cron job %r works again (after %s)",
                job.id,
                error,
                extra={**self._extra, "job_type": job.job_type},
            )

    def _failed(self, entry: _Entry, job: CronJob, now: datetime, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
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

    def _now(self) -> datetime:
        if self._clock is not None:
            return self._aware(self._clock(), "clock()")
        anchor = self._anchor
        if anchor is None:
            return datetime.fromtimestamp(time.time(), UTC)
        server, monotonic, _ = anchor
        return datetime.fromtimestamp(server + time.monotonic() - monotonic, UTC)

    def _clock_jumped(self) -> bool:
        """Whether the host's clock was stepped, or the host suspended, since the last sync."""
        anchor = self._anchor
        if anchor is None:
            return True
        _, monotonic, wall = anchor
        return abs((time.time() - wall) - (time.monotonic() - monotonic)) > CLOCK_JUMP

    @staticmethod
    def _aware(value: object, what: str) -> datetime:
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ConfigError(f"{what} must be an aware datetime, got {value!r}")
        return value.astimezone(UTC)

    def _sync_clock(self) -> None:
        mono_before, wall_before = time.monotonic(), time.time()
        server = self._queue.server_time_ms() / 1000
        mono_after, wall_after = time.monotonic(), time.time()
        wall = (wall_before + wall_after) / 2
        offset = server - wall
        if abs(offset - self._offset) > CLOCK_JUMP:
            self._logger.info(
                "local clock is %+.3f s off the Redis server's; scheduling on Redis time",
                -offset,
                extra=self._extra,
            )
        self._offset = offset
        self._anchor = (server, (mono_before + mono_after) / 2, wall)

    def _next(self, job: CronJob, after: datetime) -> datetime | None:
        found = job.schedule.next_after(after, default_tz=self.tz)
        return None if found is None else found.astimezone(UTC)

    def _check_schedule(self, cron_job: CronJob) -> None:
        try:
            found = cron_job.schedule.next_after(self._now(), default_tz=self.tz)
        except Exception as exc:
            raise ConfigError(
                f"schedule of cron job {cron_job.id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if found is not None and (not isinstance(found, datetime) or found.utcoffset() is None):
            raise ConfigError(
                f"schedule of cron job {cron_job.id!r} returned {found!r}: next_after must "
                "return an aware datetime or None"
            )

    def _plan(self, entry: _Entry, job: CronJob, now: datetime) -> None:
        """Plan from the claim in Redis, then publish the plan."""
        state = self._queue.cron_state(job.id)
        plan = self._replan(
            job,
            now,
            _parse_ms(state.get("last_fire")),
            _parse_ms(state.get("next_run")),
            entry.resumed,
        )
        with self._lock:
            if self._current(entry, job):
                entry.next_fire, entry.catch_up, entry.ttl = plan.next_fire, plan.catch_up, plan.ttl
                entry.planned = True
                self._announce(entry)

    def _plan_best_effort(self, entry: _Entry, job: CronJob, now: datetime) -> None:
        try:
            self._guarded(entry, job, now, self._plan)
        except (redis.RedisError, RedisUnavailable) as exc:
            extra = {**self._extra, "job_type": job.job_type}
            try:
                plan = self._replan(job, now, None, None, entry.resumed)
            except Exception as schedule_exc:
                self._failed(entry, job, now, schedule_exc)
                return
            with self._lock:
                if self._current(entry, job) and not entry.planned:
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

    def _replan(
        self,
        job: CronJob,
        now: datetime,
        last_fire_ms: int | None,
        announced_ms: int | None,
        resumed: datetime | None,
    ) -> _Plan:
        """The plan from the claim (or the announced first fire time), without the lock."""
        if last_fire_ms is not None:
            first = self._next(job, _from_ms(last_fire_ms))
        else:
            # A brand-new cron job fires at most its latest fire time within the grace
            # window (Daily(2, 0) first started at 02:00:03 still runs today), never a
            # burst of every one of them (Every(1) would enqueue ten at once).
            first = self._next(job, now - self.misfire_grace - _US)
            if first is not None and first <= now:
                first, _ = self._latest_before(job, first, now + _US)
            # Never fired, but a scheduler announced an earlier first fire time: the fire
            # times from there on were owed, a missed one included (run_once catches it up).
            owed = None if announced_ms is None else self._next(job, _from_ms(announced_ms) - _US)
            if owed is not None and (first is None or owed < first):
                first = owed
        if resumed is not None and first is not None and first < resumed:
            latest, count = self._latest_before(job, first, resumed)
            self._logger.info(
                "cron job %r enabled again: %s fire time(s) from %s to %s, missed while it "
                "was disabled, skipped",
                job.id,
                count if count is not None else f"more than {_MISSED_WALK}",
                first.isoformat(),
                latest.isoformat(),
                extra={**self._extra, "job_type": job.job_type},
            )
            first = self._next(job, latest)
        first, catch_up = self._resolve_missed(job, first, False, now)
        following = None if first is None else self._next(job, first)
        period = (following - first) if first is not None and following is not None else None
        ttl = max(STATE_TTL, 3 * period) if period is not None else STATE_TTL
        return _Plan(first, catch_up, ttl)

    def _resolve_missed(
        self, job: CronJob, first: datetime | None, catch_up: bool, now: datetime
    ) -> tuple[datetime | None, bool]:
        """Apply the misfire policy if ``first`` is more than the grace late."""
        cutoff = now - self.misfire_grace - WAKE_SLACK
        if first is None or first >= cutoff:
            return first, catch_up
        latest, count = self._latest_before(job, first, cutoff)
        how_many = f"{count}" if count is not None else f"more than {_MISSED_WALK}"
        extra = {**self._extra, "job_type": job.job_type}
        if job.misfire == "run_once":
            if not catch_up or latest != first:
                self._logger.info(
                    "cron job %r: %s fire time(s) missed from %s to %s; "
                    "enqueueing one catch-up for %s",
                    job.id,
                    how_many,
                    first.isoformat(),
                    latest.isoformat(),
                    latest.isoformat(),
                    extra=extra,
                )
            return latest, True
        self._logger.info(
            "cron job %r: skipped %s missed fire time(s) from %s to %s",
            job.id,
            how_many,
            first.isoformat(),
            latest.isoformat(),
            extra=extra,
        )
        return self._next(job, latest), False

    def _latest_before(
        self, job: CronJob, first: datetime, cutoff: datetime
    ) -> tuple[datetime, int | None]:
        """The last fire time before ``cutoff`` from ``first`` on, and how many (if few)."""
        latest, count = first, 1
        for _ in range(_MISSED_WALK):
            found = self._next(job, latest)
            if found is None or found >= cutoff:
                return latest, count
            latest, count = found, count + 1
        found = self._next(job, latest)
        if found is None or found >= cutoff:
            return latest, None
        # Many missed (a long outage of a frequent schedule): next_after is monotonic, so
        # bisect for the last instant whose next fire is still before the cutoff.
        lo, hi = latest, cutoff - _US
        while hi - lo > _US:
            mid = lo + (hi - lo) // 2
            found = self._next(job, mid)
            if found is not None and found < cutoff:
                lo = mid
            else:
                hi = mid
        result = self._next(job, lo)
        assert result is not None  # the bisection keeps next(lo) before the cutoff
        return result, None

    def _fire_due(self, entry: _Entry, job: CronJob, now: datetime) -> None:
        extra: dict[str, object] = {**self._extra, "job_type": job.job_type}
        while True:
            with self._lock:
                if not self._current(entry, job):
                    return
                planned, catch_up = entry.next_fire, entry.catch_up
            if planned is None or planned > now:
                break
            # The schedule is computed without the lock (it may be slow); the fire is
            # claimed under it, and only if the registration did not change meanwhile.
            fire, catch_up = self._resolve_missed(job, planned, catch_up, now)
            following = None if fire is None or fire > now else self._next(job, fire)
            with self._lock:
                if not self._current(entry, job) or entry.next_fire != planned:
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
                    _from_ms(last_ms).isoformat(),
                    extra=extra,
                )
            last = _from_ms(last_ms)
            if last > fire:  # a peer is ahead: go on from its last fire
                ahead = self._next(job, last)
                with self._lock:
                    if self._current(entry, job) and entry.next_fire == following:
                        entry.next_fire = ahead
        with self._lock:
            if self._current(entry, job) and entry.next_fire is None:
                self._announce(entry)  # the schedule ended: take it off the listing

    def _fire(
        self,
        job: CronJob,
        entry: _Entry,
        fire: datetime,
        following: datetime | None,
        extra: dict[str, object],
    ) -> tuple[bool, int]:
        """Claim ``fire`` and enqueue its job in Redis (under the lock)."""
        fire_ms = _to_ms(fire)
        job_id = f"cron:{job.id}:{fire_ms}"
        extra["job_id"] = job_id
        try:
            return self._queue.fire_cron(
                job.id,
                fire_ms,
                None if following is None else _to_ms(following),
                (job_id, job.job_type, entry.payload, job.config or JobConfig()),
                entry.ttl,
            )
        except ReplicationError as exc:  # written on the master: it did fire
            self._logger.warning("cron job %r: %s", job.id, exc, extra=extra)
            return True, fire_ms

    def _announce(self, entry: _Entry) -> None:
        job = entry.job
        fields = {
            "schedule": repr(job.schedule),
            "job_type": job.job_type,
            "enabled": "1" if job.enabled else "0",
            "misfire": job.misfire,
            "tz": str(self.tz),
        }
        next_fire = entry.next_fire if job.enabled else None
        try:
            self._queue.announce_cron(
                job.id, fields, None if next_fire is None else _to_ms(next_fire), entry.ttl
            )
        except (redis.RedisError, RedisUnavailable) as exc:
            self._logger.warning(
                "cron job %r: cannot publish its registration (%s: %s)",
                job.id,
                type(exc).__name__,
                exc,
                extra={**self._extra, "job_type": job.job_type},
            )
