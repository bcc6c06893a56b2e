"""Schedules: when a periodic job fires. Pure time arithmetic, no Redis.

A schedule answers one question, ``schedule.next_after(dt)``: the first fire time
strictly after the aware datetime ``dt``, as an aware UTC datetime, or None when it never
fires again (only an `RRule` with ``count`` or ``until`` can run out). Applied to its own
result it walks the fire times in order, each exactly once.

- `Every` fires at the multiples of its interval since the Unix epoch, so every process
  agrees on the fire times and DST never affects them.
- `Daily`, `Weekly`, `Monthly`, `Cron` and `RRule` fire at wall-clock times in a zone:
  their ``tz`` (an IANA name or a tzinfo), else the ``default_tz`` the scheduler passes,
  else UTC.

Daylight saving time. A wall-clock schedule is *fixed-hour* when it can fire at only one
hour of the day: `Daily`, `Weekly` and `Monthly` always are, a `Cron` whose hour field
allows exactly one hour (``30 2 * * *``) is, and so is an `RRule` whose occurrences all
share one hour. A fixed-hour schedule fires once per matching wall-clock time: a time that
does not exist (the spring-forward gap) fires at the first instant after the gap, e.g.
02:30 in America/New_York on 2024-03-10 fires at 03:00 EDT (07:00 UTC); a time that occurs
twice (the fall-back fold) fires at its first occurrence only; several gap times that fall
on the same instant fire once. Any other schedule (``0 * * * *``, ``*/15 9-17 * * *``, an
hourly RRule) fires at every real instant whose local wall-clock time matches: both
occurrences of a repeated time fire, and times inside a gap never happen, so they do not
fire. In short, a job scheduled "at 02:30" runs once every day, while a job scheduled
"every hour on the hour" runs every real hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol, TypeAlias, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from dateutil.relativedelta import weekday as _weekday_base
from dateutil.rrule import (
    DAILY,
    FR,
    HOURLY,
    MINUTELY,
    MO,
    SA,
    SECONDLY,
    SU,
    TH,
    TU,
    WE,
    WEEKLY,
    YEARLY,
    rrule,
    rrulebase,
    rruleset,
)
from dateutil.rrule import weekday as _Weekday
from dateutil.rrule import weekdays as _WEEKDAYS

from jobs._validators import instance_of, int_in_range, positive_duration
from jobs.errors import ConfigError
from jobs.schedule._cron import ALL_DAYS, ALL_WEEKDAYS, LAST_DAY, CronFields, parse_cron

#: Weekdays for `Weekly` (the ``dateutil.rrule`` ones, so they also work in `RRule` rules).
MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = MO, TU, WE, TH, FR, SA, SU

#: A zone as the schedules accept it: an IANA name, a tzinfo, or None (the scheduler's).
TzSpec: TypeAlias = "str | tzinfo | None"
#: ``(wall, inclusive) -> the first matching wall-clock time at/after wall``, or None.
_WallNext: TypeAlias = Callable[[datetime, bool], "datetime | None"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)
# Offset changes are searched by probing at this step: real zones never change their
# offset twice within it, so no change can hide between two probes.
_PROBE_STEP = timedelta(hours=6)


class Schedule(Protocol):
    """What the scheduler needs from a schedule: its next fire time.

    .. versionadded:: 0.1
    """

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC; None if it never fires again."""
        ...


def _resolve_tz(value: object, field: str = "tz") -> tzinfo | None:
    if value is None or isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be an IANA zone name or a tzinfo, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America", a directory
        raise ConfigError(f"{field} is not a known IANA time zone: {value!r}") from None


def _check_tz(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    # Schedules keep tz as given (and out of their hash: dateutil's zones are unhashable).
    _resolve_tz(value, field.name)


def _check_aware(dt: object) -> None:
    if not isinstance(dt, datetime):
        raise ConfigError(f"dt must be a datetime, got {type(dt).__name__}")
    if dt.utcoffset() is None:
        raise ConfigError("dt must be timezone-aware")


def _zone(tz: TzSpec, default_tz: tzinfo | None) -> tzinfo:
    return _resolve_tz(tz) or _resolve_tz(default_tz, "default_tz") or UTC


def _offset(zone: tzinfo, instant: datetime) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _wall(zone: tzinfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _bisect(lo: datetime, hi: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first instant in ``(lo, hi]`` where ``reached`` holds, given it holds at ``hi`` only."""
    while hi - lo > _MICROSECOND:
        mid = lo + (hi - lo) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _first_instant(zone: tzinfo, wall: datetime) -> datetime:
    """When a fixed-hour schedule fires for ``wall``: its first occurrence, or the gap's end."""
    # PEP 495: fold=0 is the earlier reading of an ambiguous time; in a gap, fold=0 lands
    # after the gap and fold=1 before it.
    a, b = (wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    real = [u for u in (a, b) if _wall(zone, u) == wall]
    if real:
        return min(real)
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        # A tzinfo that ignores fold (dateutil 2.8 and 2.9 give both readings the
        # offset after the gap, so that instant is still before the gap's end): the gap
        # ends within a day either way.
        lo, hi = lo - timedelta(days=1), hi + timedelta(days=1)
    return _bisect(lo, hi, lambda u: _wall(zone, u) >= wall)


def _offset_change(zone: tzinfo, start: datetime, end: datetime) -> datetime | None:
    """The first instant in ``(start, end]`` whose UTC offset differs from ``start``'s."""
    offset = _offset(zone, start)
    probe = start
    while probe < end:
        nxt = min(probe + _PROBE_STEP, end)
        if _offset(zone, nxt) != offset:
            return _bisect(probe, nxt, lambda u: _offset(zone, u) != offset)
        probe = nxt
    return None


def _next_fixed(wall_next: _WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
    # Mapping wall times to instants this way never goes backwards, so the first wall
    # time whose instant is after dt is the answer; earlier ones already fired.
    wall = wall_next(_wall(zone, dt), True)
    while wall is not None:
        instant = _first_instant(zone, wall)
        if instant > dt:
            return instant
        wall = wall_next(wall, False)
    return None


def _next_real(wall_next: _WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
    # Between two offset changes, wall time is UTC plus a constant: search one such
    # stretch at a time, starting a new one when the candidate lies past a change.
    start, inclusive = dt.astimezone(UTC), False
    while True:
        local = start.astimezone(zone)
        wall = wall_next(local.replace(tzinfo=None), inclusive)
        offset = local.utcoffset()
        if wall is None or offset is None:
            return None
        candidate = (wall - offset).replace(tzinfo=UTC)
        change = _offset_change(zone, start, candidate)
        if change is None:
            return candidate
        start, inclusive = change, True


def _search(fixed: bool, wall_next: _WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
    try:
        return (_next_fixed if fixed else _next_real)(wall_next, zone, dt)
    except OverflowError:  # the next fire time would be past year 9999
        return None


class _CronLike:
    """The ``next_after`` of the schedules that `CronFields` describe."""

    __slots__ = ()
    tz: TzSpec

    def _cron_fields(self) -> CronFields:
        raise NotImplementedError

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC (see the module's DST rules).

        Raises:
            ConfigError: ``dt`` is naive.
        """
        _check_aware(dt)
        fields = self._cron_fields()

        def wall_next(wall: datetime, inclusive: bool) -> datetime | None:
            return fields.next_wall(wall, inclusive=inclusive)

        return _search(len(fields.hours) == 1, wall_next, _zone(self.tz, default_tz), dt)


def _at(
    hour: int, minute: int, days: frozenset[int] = ALL_DAYS, weekdays: frozenset[int] = ALL_WEEKDAYS
) -> CronFields:
    return CronFields(frozenset({minute}), frozenset({hour}), days, weekdays=weekdays)


def _to_interval(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"interval must be a number of seconds or a timedelta, got {value!r}")
    try:
        return timedelta(seconds=value)
    except (OverflowError, ValueError):
        raise ConfigError(f"interval must be a finite number of seconds, got {value!r}") from None


def _at_least_a_millisecond(inst: object, field: attrs.Attribute[Any], value: timedelta) -> None:
    # A fire time is claimed in Redis as whole milliseconds since the epoch: two fire
    # times within one millisecond would claim the same value, and the second would be
    # refused as "already fired", silently.
    if value < _MILLISECOND:
        raise ConfigError(
            f"{field.name} must be at least 1 ms (fire times are claimed in whole "
            f"milliseconds), got {value.total_seconds()!r} s"
        )


@attrs.frozen
class Every:
    """Fire every ``interval``, at the multiples of it since the Unix epoch (UTC).

    ``Every(300)`` fires at 12:00:00, 12:05:00 ... whichever process asks, and DST never
    shifts it. Arithmetic is exact to the microsecond, so ``Every(0.1)`` does not drift.

    Example::

        jobs.Every(timedelta(minutes=5)).next_after(now)

    Args:
        interval: seconds (int or float) or a timedelta, at least 1 ms (``Every(0.001)``);
            a shorter one raises `ConfigError`.

    .. versionadded:: 0.1
    """

    interval: timedelta = attrs.field(
        converter=_to_interval, validator=[positive_duration, _at_least_a_millisecond]
    )

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first multiple of ``interval`` since the epoch strictly after ``dt``, in UTC.

        ``default_tz`` is accepted for uniformity and ignored. None past year 9999.

        Raises:
            ConfigError: ``dt`` is naive.
        """
        _check_aware(dt)
        step = self.interval // _MICROSECOND
        elapsed = (dt - _EPOCH) // _MICROSECOND
        try:
            return _EPOCH + timedelta(microseconds=(elapsed // step + 1) * step)
        except OverflowError:
            return None


@attrs.frozen
class Daily(_CronLike):
    """Fire every day at ``hour:minute`` local time.

    Args:
        hour: 0..23.
        minute: 0..59.
        tz: an IANA zone name or a tzinfo; None means the scheduler's zone.

    .. versionadded:: 0.1
    """

    hour: int = attrs.field(validator=int_in_range(0, 23))
    minute: int = attrs.field(validator=int_in_range(0, 59))
    tz: TzSpec = attrs.field(default=None, validator=_check_tz, hash=False)

    def _cron_fields(self) -> CronFields:
        return _at(self.hour, self.minute)


def _to_weekday(value: object) -> _Weekday:
    if isinstance(value, _weekday_base) and value.n is None:  # MONDAY(+1) means nothing here
        return _WEEKDAYS[value.weekday]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return _WEEKDAYS[value]
    raise ConfigError(
        f"weekday must be jobs.MONDAY..jobs.SUNDAY or an int 0..6 (Monday=0), got {value!r}"
    )


@attrs.frozen
class Weekly(_CronLike):
    """Fire every week on ``weekday`` at ``hour:minute`` local time.

    Args:
        weekday: `MONDAY` .. `SUNDAY`, or an int 0..6 with Monday=0.
        hour: 0..23.
        minute: 0..59.
        tz: an IANA zone name or a tzinfo; None means the scheduler's zone.

    .. versionadded:: 0.1
    """

    weekday: _Weekday = attrs.field(converter=_to_weekday)
    hour: int = attrs.field(validator=int_in_range(0, 23))
    minute: int = attrs.field(validator=int_in_range(0, 59))
    tz: TzSpec = attrs.field(default=None, validator=_check_tz, hash=False)

    def _cron_fields(self) -> CronFields:
        return _at(self.hour, self.minute, weekdays=frozenset({self.weekday.weekday}))


def _month_day(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    valid = isinstance(value, int) and not isinstance(value, bool) and value in (-1, *range(1, 32))
    if not valid:
        raise ConfigError(f"{field.name} must be in 1..31 or -1 (the last day), got {value!r}")


@attrs.frozen
class Monthly(_CronLike):
    """Fire every month on ``day`` at ``hour:minute`` local time.

    Months without that day are skipped: day 31 fires only in 31-day months, day 29 in
    February only in leap years. ``day=-1`` is the last day of every month.

    Args:
        day: 1..31, or -1 for the last day of the month.
        hour: 0..23.
        minute: 0..59.
        tz: an IANA zone name or a tzinfo; None means the scheduler's zone.

    .. versionadded:: 0.1
    """

    day: int = attrs.field(validator=_month_day)
    hour: int = attrs.field(validator=int_in_range(0, 23))
    minute: int = attrs.field(validator=int_in_range(0, 59))
    tz: TzSpec = attrs.field(default=None, validator=_check_tz, hash=False)

    def _cron_fields(self) -> CronFields:
        return _at(
            self.hour, self.minute, days=frozenset({LAST_DAY if self.day == -1 else self.day})
        )


@attrs.frozen
class Cron(_CronLike):
    """Fire at the wall-clock times a standard 5-field cron expression matches.

    Fields are ``minute hour day-of-month month day-of-week`` with ``*``, lists, ranges
    and steps (``*/15``, ``10-50/10``, ``5/15``), names ``JAN``..``DEC`` and
    ``SUN``..``SAT``, day-of-week 0..7 (0 and 7 are Sunday), and the macros ``@hourly``,
    ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``, ``@annually``. When
    both day fields are restricted (neither starts with ``*``), a day matches if either
    does (Vixie cron). An hour field with one value makes it a fixed-hour schedule for
    DST purposes (see the module docstring).

    Example::

        jobs.Cron("*/15 9-17 * * MON-FRI", tz="Europe/Berlin")

    Args:
        expr: the expression; invalid ones raise `ConfigError` naming the field.
        tz: an IANA zone name or a tzinfo; None means the scheduler's zone.

    .. versionadded:: 0.1
    """

    expr: str = attrs.field(validator=instance_of(str))
    tz: TzSpec = attrs.field(default=None, validator=_check_tz, hash=False)
    _fields: CronFields = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_fields", parse_cron(self.expr))

    def _cron_fields(self) -> CronFields:
        return self._fields


def _rule_hours(rule: rrulebase) -> set[int] | None:
    """The hours of day the rule's occurrences can have; None when any (or unknown)."""
    # dateutil has no public accessor for a rule's parts; these attributes have been
    # stable since 2.0, and a missing one only means "any hour".
    if isinstance(rule, rruleset):
        hours = {d.hour for d in getattr(rule, "_rdate", [])}
        for sub in getattr(rule, "_rrule", []):
            sub_hours = _rule_hours(sub)
            if sub_hours is None:
                return None
            hours |= sub_hours
        return hours
    byhour = getattr(rule, "_byhour", None)
    return None if byhour is None else set(byhour)


# What the occurrences of a dateutil rrule depend on besides where it starts, as its
# constructor normalised them (the defaults taken from dtstart filled in). dateutil has
# no public accessor for them; a missing one only means the rule is replayed from dtstart.
_RULE_PARTS = (
    "_freq",
    "_interval",
    "_wkst",
    "_count",
    "_until",
    "_tzinfo",
    "_bysetpos",
    "_bymonth",
    "_byyearday",
    "_byweekno",
    "_byweekday",
    "_bynweekday",
    "_bymonthday",
    "_bynmonthday",
    "_byeaster",
    "_byhour",
    "_byminute",
    "_bysecond",
    "_timeset",
)
_FIXED_PERIODS = {
    WEEKLY: timedelta(weeks=1),
    DAILY: timedelta(days=1),
    HOURLY: timedelta(hours=1),
    MINUTELY: timedelta(minutes=1),
    SECONDLY: timedelta(seconds=1),
}
_NO_PART = object()


def _rule_parts(rule: rrule) -> dict[str, Any] | None:
    parts = {name: getattr(rule, name, _NO_PART) for name in _RULE_PARTS}
    return None if any(value is _NO_PART for value in parts.values()) else parts


def _later_starts(freq: int, interval: int, start: datetime, wall: datetime) -> Iterator[datetime]:
    """``start`` moved forward by whole intervals of the rule's period, to at most ``wall``.

    Latest first; naive wall-clock times.
    """
    fixed = _FIXED_PERIODS.get(freq)
    if fixed is not None:
        times = (wall - start) // (fixed * interval)
        if times > 0:
            yield start + fixed * interval * times
        return
    months = (12 if freq == YEARLY else 1) * interval
    times = ((wall.year - start.year) * 12 + wall.month - start.month) // months
    # The day of dtstart (the 31st, Feb 29) is missing from some periods: try earlier ones.
    for back in range(times, max(times - 13, 0), -1):
        total = start.month - 1 + back * months
        try:
            moved = start.replace(year=start.year + total // 12, month=total % 12 + 1)
        except ValueError:
            continue
        if moved <= wall:
            yield moved


def _restart_rrule(rule: rrule, wall: datetime) -> rrule:
    dtstart = getattr(rule, "_dtstart", None)
    parts = _rule_parts(rule)
    # With a count, the occurrences before the new start would no longer be counted.
    if not isinstance(dtstart, datetime) or parts is None or parts["_count"] is not None:
        return rule
    if dtstart.tzinfo is not wall.tzinfo:  # compare like dateutil: wall times in one zone
        return rule
    naive_start, naive_wall = dtstart.replace(tzinfo=None), wall.replace(tzinfo=None)
    for moved in _later_starts(parts["_freq"], parts["_interval"], naive_start, naive_wall):
        try:
            restarted = rule.replace(dtstart=moved.replace(tzinfo=dtstart.tzinfo))
        except (ValueError, OverflowError):
            continue
        if _rule_parts(restarted) == parts:
            return restarted
    return rule


def _restart(rule: rrulebase, wall: datetime) -> rrulebase:
    """A rule with the same occurrences as ``rule`` from ``wall`` on, starting near it.

    dateutil computes ``after(wall)`` by replaying every occurrence from dtstart (for a
    minutely rule started a year ago, half a million of them on each call). Moving
    dtstart forward by a whole number of the rule's periods (``interval`` days, weeks,
    months ...) keeps every occurrence from there on: each period's occurrences, BYSETPOS
    included, depend only on the period and the rule's parts. The move is kept only when
    the rule's normalised parts stay the same (defaults such as BYMONTHDAY come from
    dtstart), and never for a rule with COUNT.
    """
    if isinstance(rule, rrule):
        return _restart_rrule(rule, wall)
    if isinstance(rule, rruleset):
        found = [getattr(rule, name, None) for name in ("_rrule", "_rdate", "_exrule", "_exdate")]
        if not all(isinstance(items, list) for items in found):
            return rule
        rules, rdates, exrules, exdates = cast("list[list[Any]]", found)
        restarted = rruleset()
        for sub in rules:
            restarted.rrule(_restart_rrule(sub, wall) if isinstance(sub, rrule) else sub)
        for sub in exrules:
            restarted.exrule(_restart_rrule(sub, wall) if isinstance(sub, rrule) else sub)
        for day in rdates:
            restarted.rdate(day)
        for day in exdates:
            restarted.exdate(day)
        return restarted
    return rule


@attrs.frozen
class RRule:
    """Fire at the occurrences of a ``dateutil.rrule`` rule (an ``rrule`` or ``rruleset``).

    Occurrences are wall-clock times: in the rule's own zone when its ``dtstart`` is
    aware, else in ``tz`` (or the scheduler's zone, or UTC). A rule whose occurrences all
    share one hour of the day is fixed-hour for DST purposes (see the module docstring).
    A call costs the same however old the rule's ``dtstart`` (dateutil alone replays every
    occurrence since), unless the rule has a ``count``.

    Example::

        jobs.RRule(rrule(MONTHLY, byweekday=jobs.FRIDAY(-1), byhour=17, byminute=0))

    Args:
        rule: the rule; one with ``count`` or ``until`` eventually stops firing.
        tz: zone for a rule with a naive ``dtstart``: an IANA name or a tzinfo; None means
            the scheduler's zone. Ignored when ``dtstart`` is aware.

    .. versionadded:: 0.1
    """

    rule: rrulebase = attrs.field(validator=instance_of(rrule, rruleset))
    tz: TzSpec = attrs.field(default=None, validator=_check_tz, hash=False)
    _rule_tz: tzinfo | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        first = next(iter(self.rule), None)
        object.__setattr__(self, "_rule_tz", None if first is None else first.tzinfo)

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC; None once the rule is exhausted.

        Raises:
            ConfigError: ``dt`` is naive.
        """
        _check_aware(dt)
        rule_tz = self._rule_tz
        zone = rule_tz or _zone(self.tz, default_tz)

        def wall_next(wall: datetime, inclusive: bool) -> datetime | None:
            # Attaching the rule's own tzinfo object makes Python compare wall times.
            at = wall.replace(tzinfo=rule_tz)
            found = _restart(self.rule, at).after(at, inc=inclusive)
            if found is None:
                return None
            if rule_tz is not None and found.tzinfo is not rule_tz:
                found = found.astimezone(rule_tz)
            return found.replace(tzinfo=None)

        hours = _rule_hours(self.rule)
        return _search(hours is not None and len(hours) == 1, wall_next, zone, dt)
