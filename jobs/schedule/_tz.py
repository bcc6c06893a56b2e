"""Zones and daylight saving time for the wall-clock schedules.

A schedule keeps its ``tz`` as given (an IANA name, a tzinfo, or None for the
scheduler's zone) and resolves it on each call. `search` turns a wall-clock rule (the
next matching local time) into the next real instant:

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

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs.errors import ConfigError

if TYPE_CHECKING:
    import attrs

#: A zone as the schedules accept it: an IANA name, a tzinfo, or None (the scheduler's).
TzSpec: TypeAlias = "str | tzinfo | None"
#: ``(wall, inclusive) -> the first matching wall-clock time at/after wall``, or None.
WallNext: TypeAlias = Callable[[datetime, bool], "datetime | None"]

_MICROSECOND = timedelta(microseconds=1)
# Offset changes are searched by probing at this step: real zones never change their
# offset twice within it, so no change can hide between two probes.
_PROBE_STEP = timedelta(hours=6)


def resolve_tz(value: object, field: str = "tz") -> tzinfo | None:
    if value is None or isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be an IANA zone name or a tzinfo, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America", a directory
        raise ConfigError(f"{field} is not a known IANA time zone: {value!r}") from None


def check_tz(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    # Schedules keep tz as given (and out of their hash: dateutil's zones are unhashable).
    resolve_tz(value, field.name)


def check_aware(dt: object) -> None:
    if not isinstance(dt, datetime):
        raise ConfigError(f"dt must be a datetime, got {type(dt).__name__}")
    if dt.utcoffset() is None:
        raise ConfigError("dt must be timezone-aware")


def zone_for(tz: TzSpec, default_tz: tzinfo | None) -> tzinfo:
    return resolve_tz(tz) or resolve_tz(default_tz, "default_tz") or UTC


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


def _next_fixed(wall_next: WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
    # Mapping wall times to instants this way never goes backwards, so the first wall
    # time whose instant is after dt is the answer; earlier ones already fired.
    wall = wall_next(_wall(zone, dt), True)
    while wall is not None:
        instant = _first_instant(zone, wall)
        if instant > dt:
            return instant
        wall = wall_next(wall, False)
    return None


def _next_real(wall_next: WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
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


def search(fixed: bool, wall_next: WallNext, zone: tzinfo, dt: datetime) -> datetime | None:
    try:
        return (_next_fixed if fixed else _next_real)(wall_next, zone, dt)
    except OverflowError:  # the next fire time would be past year 9999
        return None
