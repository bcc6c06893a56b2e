"""Fire-time arithmetic: the next fire time of a cron job, and the misfire policy.

A fire time more than ``misfire_grace`` late (plus up to `WAKE_SLACK` of the scheduler's
own wake-up latency) counts as missed. With ``misfire="skip"`` missed fire times are not
enqueued; with ``misfire="run_once"`` the latest of them is enqueued once, as a catch-up.
A new cron job with no state in Redis starts with the fire times from
``now - misfire_grace`` on. Nothing here touches Redis or a lock: the `Planner` computes
from the state the scheduler read and hands back a `Plan`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

import attrs

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.schedule._clock import AnyLogger
    from jobs.schedule.cron_job import CronJob

#: Shortest life of a cron job's state in Redis, refreshed on every fire and announce.
STATE_TTL = timedelta(days=30)
#: Lateness the scheduler allows itself on top of ``misfire_grace``: its own wake-up
#: latency must not turn a fire into a missed one, even with ``misfire_grace=0``.
WAKE_SLACK = timedelta(seconds=1)
#: Missed fire times counted one by one before a binary search finds the latest.
_MISSED_WALK = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)


def to_ms(instant: datetime) -> int:
    """Milliseconds since the epoch, as Redis keeps fire times."""
    return (instant - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The UTC instant ``ms`` milliseconds after the epoch."""
    return _EPOCH + timedelta(milliseconds=ms)


def parse_ms(raw: str | None) -> int | None:
    """A state field in ms, or None if it is missing or corrupt."""
    try:
        return None if not raw else int(raw)
    except ValueError:  # a corrupt field only loses the claim's history, not the schedule
        return None


def grace(value: object) -> timedelta:
    """``misfire_grace`` as a timedelta.

    Raises:
        ConfigError: not a number of seconds or a timedelta, or negative.
    """
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


@attrs.frozen
class Plan:
    """What a cron job does next: its next fire time, and the TTL of its state."""

    #: The fire time to enqueue next (in the past for a catch-up); None: never.
    next_fire: datetime | None
    #: ``next_fire`` is the one catch-up of a ``run_once`` cron job.
    catch_up: bool
    ttl: timedelta


class Planner:
    """Computes fire times in a default zone and applies the misfire policy.

    Args:
        tz: the zone of schedules that name none.
        misfire_grace: how late a fire may be and still count as on time.
        logger: where missed and skipped fire times are reported.
        extra: the ``extra`` fields of those records.
    """

    def __init__(
        self, tz: tzinfo, misfire_grace: timedelta, logger: AnyLogger, extra: dict[str, object]
    ) -> None:
        self.tz = tz
        self.misfire_grace = misfire_grace
        self._logger = logger
        self._extra = extra

    def next(self, job: CronJob, after: datetime) -> datetime | None:
        """The cron job's first fire time after ``after``, in UTC; None: no more."""
        found = job.schedule.next_after(after, default_tz=self.tz)
        return None if found is None else found.astimezone(UTC)

    def check(self, cron_job: CronJob, now: datetime) -> None:
        """Compute one fire time, so that a broken schedule fails its registration.

        Raises:
            ConfigError: the schedule raised, or returned what is not an aware datetime.
        """
        try:
            found = cron_job.schedule.next_after(now, default_tz=self.tz)
        except Exception as exc:
            raise ConfigError(
                f"schedule of cron job {cron_job.id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if found is not None and (not isinstance(found, datetime) or found.utcoffset() is None):
            raise ConfigError(
                f"schedule of cron job {cron_job.id!r} returned {found!r}: next_after must "
                "return an aware datetime or None"
            )

    def replan(
        self,
        job: CronJob,
        now: datetime,
        last_fire_ms: int | None,
        announced_ms: int | None,
        resumed: datetime | None,
    ) -> Plan:
        """The plan from the claim (or the announced first fire time).

        Args:
            job: the cron job.
            now: the current instant.
            last_fire_ms: its last fire time claimed in Redis, if any.
            announced_ms: the next run a scheduler announced, if any.
            resumed: when it was last enabled again: earlier fire times are not owed.
        """
        if last_fire_ms is not None:
            first = self.next(job, from_ms(last_fire_ms))
        else:
            # A brand-new cron job fires at most its latest fire time within the grace
            # window (Daily(2, 0) first started at 02:00:03 still runs today), never a
            # burst of every one of them (Every(1) would enqueue ten at once).
            first = self.next(job, now - self.misfire_grace - _US)
            if first is not None and first <= now:
                first, _ = self.latest_before(job, first, now + _US)
            # Never fired, but a scheduler announced an earlier first fire time: the fire
            # times from there on were owed, a missed one included (run_once catches it up).
            owed = None if announced_ms is None else self.next(job, from_ms(announced_ms) - _US)
            if owed is not None and (first is None or owed < first):
                first = owed
        if resumed is not None and first is not None and first < resumed:
            latest, count = self.latest_before(job, first, resumed)
            self._logger.info(
                "cron job %r enabled again: %s fire time(s) from %s to %s, missed while it "
                "was disabled, skipped",
                job.id,
                count if count is not None else f"more than {_MISSED_WALK}",
                first.isoformat(),
                latest.isoformat(),
                extra={**self._extra, "job_type": job.job_type},
            )
            first = self.next(job, latest)
        first, catch_up = self.resolve_missed(job, first, False, now)
        following = None if first is None else self.next(job, first)
        period = (following - first) if first is not None and following is not None else None
        ttl = max(STATE_TTL, 3 * period) if period is not None else STATE_TTL
        return Plan(first, catch_up, ttl)

    def resolve_missed(
        self, job: CronJob, first: datetime | None, catch_up: bool, now: datetime
    ) -> tuple[datetime | None, bool]:
        """Apply the misfire policy if ``first`` is more than the grace late.

        Returns:
            The fire time to enqueue next, and whether it is a ``run_once`` catch-up.
        """
        cutoff = now - self.misfire_grace - WAKE_SLACK
        if first is None or first >= cutoff:
            return first, catch_up
        latest, count = self.latest_before(job, first, cutoff)
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
        return self.next(job, latest), False

    def latest_before(
        self, job: CronJob, first: datetime, cutoff: datetime
    ) -> tuple[datetime, int | None]:
        """The last fire time before ``cutoff`` from ``first`` on, and how many (if few)."""
        latest, count = first, 1
        for _ in range(_MISSED_WALK):
            found = self.next(job, latest)
            if found is None or found >= cutoff:
                return latest, count
            latest, count = found, count + 1
        found = self.next(job, latest)
        if found is None or found >= cutoff:
            return latest, None
        # Many missed (a long outage of a frequent schedule): next_after is monotonic, so
        # bisect for the last instant whose next fire is still before the cutoff.
        lo, hi = latest, cutoff - _US
        while hi - lo > _US:
            mid = lo + (hi - lo) // 2
            found = self.next(job, mid)
            if found is not None and found < cutoff:
                lo = mid
            else:
                hi = mid
        result = self.next(job, lo)
        assert result is not None  # the bisection keeps next(lo) before the cutoff
        return result, None
