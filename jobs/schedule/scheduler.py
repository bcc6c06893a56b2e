"""`Scheduler`: the thread that fires cron jobs, each fire time enqueued exactly once.

Any number of schedulers, in any number of processes and hosts, may run the same cron
jobs against one queue. There is no leader and no lock that can expire: each fire is one
Lua script that claims the fire time and enqueues its job together (see
`jobs.schedule._firing`), so whichever scheduler comes first enqueues it and the others
learn they were late. The job id is deterministic, ``cron:<cron id>:<fire time in ms>``.

Timing. The scheduler thread sleeps until the earliest next fire time (an `Event` wait,
so `Scheduler.stop` is immediate and `Scheduler.register` re-plans at once), but never
longer than `MAX_WAIT`. Its clock is the Redis server's, carried forward by the monotonic
clock (`jobs.schedule._clock`), so schedulers on hosts with skewed clocks fire at the
same instants and a step of the host's clock changes nothing.

Failures. A schedule that raises, or an error reply about one cron job's data, is logged
and that cron job is retried after `SCHEDULE_RETRY`; the others go on. Redis being
unreachable fails the round, which the thread retries with a back-off. An exception that
is not an `Exception` (``SystemExit`` from a library) ends the thread: it is logged as
critical, and `Scheduler.next_run` raises until `Scheduler.start` runs the thread again.

Missed fire times. A fire time more than ``misfire_grace`` late (plus up to `WAKE_SLACK`)
counts as missed: with ``misfire="skip"`` (the default) it is not enqueued; with
``misfire="run_once"`` the latest missed one is enqueued once, as a catch-up (the
arithmetic is `jobs.schedule._planner`'s). What a cron job keeps in Redis is described in
`jobs.schedule._firing`.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, cast

import attrs

from jobs._loops import Loop
from jobs.client import Client
from jobs.errors import ConfigError, JobsError
from jobs.schedule._clock import CLOCK_JUMP as CLOCK_JUMP
from jobs.schedule._clock import AnyLogger as AnyLogger
from jobs.schedule._clock import SchedulerClock, aware
from jobs.schedule._firing import SCHEDULE_RETRY as SCHEDULE_RETRY
from jobs.schedule._firing import Entry, Firing, encode_payload
from jobs.schedule._planner import STATE_TTL as STATE_TTL
from jobs.schedule._planner import WAKE_SLACK as WAKE_SLACK
from jobs.schedule._planner import Planner, grace
from jobs.schedule._tz import resolve_tz
from jobs.schedule.cron_job import CronJob as CronJob
from jobs.schedule.cron_job import Misfire as Misfire

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable
    from types import TracebackType

    from jobs.queue.redis_queue import RedisQueue

#: Longest sleep of the scheduler thread, in seconds (see the module docstring).
MAX_WAIT = 60.0
#: How long `Scheduler.stop` waits for the thread (a round blocked on Redis ends by the
#: client's socket timeout).
STOP_TIMEOUT = 10.0

_QUEUE_METHODS = ("fire_cron", "cron_state", "announce_cron", "server_time_ms")


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
        logger: a logger to use instead of ``jobs.scheduler``.
        tz: the zone of schedules that name none: an IANA name or a tzinfo.
        misfire_grace: seconds (or a timedelta, >= 0) a fire may be late and still count
            as on time rather than missed.
        clock: ``() -> aware datetime``, for tests; default: the local clock corrected by
            the Redis server's.

    Raises:
        ConfigError: a bad argument, with a message naming it.

    .. versionadded:: 0.1
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
        self._logger: AnyLogger = logger or logging.getLogger("jobs.scheduler")
        self._extra: dict[str, object] = {"queue": queue.name}
        self._planner = Planner(
            resolve_tz(tz, "tz") or UTC, grace(misfire_grace), self._logger, self._extra
        )
        self._clock = SchedulerClock(queue, self._logger, self._extra, clock)
        self._sync_due = True
        self._firing = Firing(queue, self._planner, self._logger, self._extra)
        # Shared with the firing: once disable() or unregister() returns, nothing fires.
        self._entries = self._firing.entries
        self._lock = self._firing.lock
        # One round at a time (the thread's and run_once() calls of a custom loop).
        self._round = threading.Lock()
        self._changed = threading.Event()
        # Guards only the thread's life, so that stop() never waits for a round to end.
        self._life = threading.Lock()
        self._loop: Loop | None = None
        #: What killed the thread ("Type: message"), if something not an Exception did.
        self._death: str | None = None

    @property
    def tz(self) -> tzinfo:
        """The zone of schedules that name none."""
        return self._planner.tz

    @tz.setter
    def tz(self, value: tzinfo) -> None:
        self._planner.tz = value

    @property
    def misfire_grace(self) -> timedelta:
        """How late a fire may be and still count as on time rather than missed."""
        return self._planner.misfire_grace

    @misfire_grace.setter
    def misfire_grace(self, value: timedelta) -> None:
        self._planner.misfire_grace = value

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
        entry = Entry(cron_job, encode_payload(cron_job, self._queue.config.max_payload_bytes))
        self._planner.check(cron_job, self._clock.now())
        with self._lock:
            self._entries[cron_job.id] = entry
            if not cron_job.enabled:
                self._firing.announce(entry)
        if cron_job.enabled:
            self._firing.plan_best_effort(entry, cron_job, self._clock.now())
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
                now = entry.resumed = self._clock.now()
                entry.planned, entry.error, entry.retry_at = False, None, None
        if job is not None:
            self._firing.plan_best_effort(entry, job, now)
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
                self._firing.announce(entry)
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
            self._firing.announce(entry)
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
        own_clock = not explicit and self._clock.custom is None
        with self._round:
            synced = False
            if own_clock and (self._sync_due or self._clock.jumped()):
                self._clock.sync()
                synced, self._sync_due = True, False
            current = aware(now, "now") if now is not None else self._clock.now()
            firing = self._firing
            for entry, job in firing.active(current):
                if not entry.planned:
                    firing.guarded(entry, job, current, firing.plan)
            due = [
                (entry, job)
                for entry, job in firing.active(current)
                if entry.next_fire is not None and entry.next_fire <= current
            ]
            if due and own_clock and not synced:
                self._clock.sync()
                current = self._clock.now()
            for entry, job in due:
                firing.guarded(entry, job, current, firing.fire_due)
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
        reference = current if explicit else self._clock.now()
        return min(max((min(wake) - reference).total_seconds(), 0.0), MAX_WAIT)
