"""`RRule`: fire at the occurrences of a ``dateutil.rrule`` rule, fast however old.

dateutil computes ``after(wall)`` by replaying every occurrence from dtstart; `_restart`
moves dtstart forward by whole periods first, so a call costs the same whatever the age
of the rule (unless it has a COUNT).
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, cast

import attrs
from dateutil.rrule import (
    DAILY,
    HOURLY,
    MINUTELY,
    SECONDLY,
    WEEKLY,
    YEARLY,
    rrule,
    rrulebase,
    rruleset,
)

from jobs._validators import instance_of
from jobs.schedule._tz import TzSpec, check_aware, check_tz, search, zone_for

if TYPE_CHECKING:
    from collections.abc import Iterator


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
        if parts["_freq"] == WEEKLY and parts["_bysetpos"]:
            # dateutil's first week runs from dtstart's day, not from the week's start
            # (wkst), and BYSETPOS picks within it: start the week whole, as every week
            # after the rule's first one is. (What this adds comes before ``wall``.)
            moved -= timedelta(days=(moved.weekday() - parts["_wkst"]) % 7)
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
    share one hour of the day is fixed-hour for DST purposes (see ``jobs.schedule._tz``).
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
    tz: TzSpec = attrs.field(default=None, validator=check_tz, hash=False)
    _rule_tz: tzinfo | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        first = next(iter(self.rule), None)
        object.__setattr__(self, "_rule_tz", None if first is None else first.tzinfo)

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC; None once the rule is exhausted.

        Raises:
            ConfigError: ``dt`` is naive.
        """
        check_aware(dt)
        rule_tz = self._rule_tz
        zone = rule_tz or zone_for(self.tz, default_tz)

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
        return search(hours is not None and len(hours) == 1, wall_next, zone, dt)
