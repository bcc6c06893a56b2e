"""Cron fields: parsing five-field expressions, and matching naive wall-clock times.

Everything here is calendar arithmetic on naive datetimes (what a wall clock reads);
time zones, DST gaps and folds are `jobs.schedule.schedules`' business.

The dialect is Vixie cron's: ``minute hour day-of-month month day-of-week`` with ``*``,
lists, ranges, steps (``*/15``, ``10-50/10``, ``5/15`` = ``5-59/15``), month and weekday
names (case-insensitive), day-of-week 0..7 with both 0 and 7 meaning Sunday, and the
``@hourly`` ... ``@annually`` macros. When both day fields are restricted a day matches
if *either* does; a field counts as unrestricted when its text starts with ``*``.
"""

from __future__ import annotations

import calendar
from datetime import MAXYEAR as _MAXYEAR
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

import attrs

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: In `CronFields.days`, "the last day of the month" (``Monthly(-1)``; cron has no syntax for it).
LAST_DAY = -1

MACROS: Mapping[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# Spelled out: calendar.month_abbr follows the process locale.
_MONTH_NAMES = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_WEEKDAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

# (name, low, high, names); day-of-week is in cron numbering here (0 and 7 are Sunday).
_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _WEEKDAY_NAMES),
)

#: The Gregorian calendar, weekdays included, repeats every 400 years (146,097 days are
#: exactly 20,871 weeks), so a valid expression fires within any 400 years: a search that
#: gets further has a bug or hit MAXYEAR. (The longest real wait is 40 years: Feb 29 on a
#: Sunday, 2088 -> 2128; the search stops at the first match, so the bound costs nothing.)
_SEARCH_YEARS = 400
_MINUTE = timedelta(minutes=1)
ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))
ALL_DAYS = frozenset(range(1, 32))
ALL_MONTHS = frozenset(range(1, 13))
ALL_WEEKDAYS = frozenset(range(7))


def _next_in(values: Iterable[int], at_least: int) -> int | None:
    return min((v for v in values if v >= at_least), default=None)


@attrs.frozen
class CronFields:
    """The allowed values of each field; weekdays use Python's numbering (Monday=0).

    ``day_or`` selects Vixie's rule for two restricted day fields: a day matches if its
    day-of-month *or* its weekday is allowed; otherwise both must be.
    """

    minutes: frozenset[int] = ALL_MINUTES
    hours: frozenset[int] = ALL_HOURS
    days: frozenset[int] = ALL_DAYS
    months: frozenset[int] = ALL_MONTHS
    weekdays: frozenset[int] = ALL_WEEKDAYS
    day_or: bool = False

    def day_matches(self, day: date) -> bool:
        """Whether the fields allow this calendar day."""
        dom = day.day in self.days or (
            LAST_DAY in self.days and day.day == calendar.monthrange(day.year, day.month)[1]
        )
        dow = day.weekday() in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def can_fire(self) -> bool:
        """Whether some calendar day ever matches (``0 0 30 2 *`` never does)."""
        if self.day_or or LAST_DAY in self.days:
            return bool(self.months)
        # Every valid (month, day) falls on every weekday somewhere in the Gregorian cycle.
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in self.months}
        return any(d <= longest[m] for m in self.months for d in self.days)

    def next_wall(self, start: datetime, *, inclusive: bool = True) -> datetime | None:
        """The first whole minute at or after ``start`` (after, unless ``inclusive``) that matches.

        Jumps field by field (month, day, hour, minute) rather than minute by minute. None
        when nothing matches before the end of the datetime range.
        """
        t = start.replace(second=0, microsecond=0)
        try:
            if t < start or (t == start and not inclusive):
                t += _MINUTE
            last_year = min(t.year + _SEARCH_YEARS, _MAXYEAR)
            while t.year <= last_year:
                if t.month not in self.months:
                    month = _next_in(self.months, t.month + 1)
                    if month is None:
                        if t.year == _MAXYEAR:
                            return None
                        t = datetime(t.year + 1, min(self.months), 1)
                    else:
                        t = datetime(t.year, month, 1)
                    continue
                hour = _next_in(self.hours, t.hour)
                if hour is None or not self.day_matches(t.date()):
                    t = datetime.combine(t.date() + timedelta(days=1), time())
                    continue
                if hour != t.hour:
                    t = t.replace(hour=hour, minute=0)
                minute = _next_in(self.minutes, t.minute)
                if minute is None:
                    t = t.replace(minute=0) + timedelta(hours=1)
                    continue
                return t.replace(minute=minute)
        except OverflowError:
            return None
        return None


def _error(field: str, text: str, why: str) -> ConfigError:
    return ConfigError(f"cron field {field!r} is invalid: {text!r} ({why})")


def _value(field: str, text: str, item: str, low: int, high: int, names: Mapping[str, int]) -> int:
    if item.upper() in names:
        return names[item.upper()]
    if not (item.isascii() and item.isdigit()):
        known = f"a number or a name ({', '.join(names)})" if names else "a number"
        raise _error(field, text, f"{item!r} is not {known}")
    value = int(item)
    if not low <= value <= high:
        raise _error(field, text, f"{value} is out of range {low}..{high}")
    return value


def _parse_field(
    field: str, text: str, low: int, high: int, names: Mapping[str, int]
) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise _error(field, text, f"step {step_text!r} is not a number")
            step = int(step_text)
            if not 1 <= step <= high - low + 1:
                raise _error(field, text, f"step {step} is out of range 1..{high - low + 1}")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            lo_text, _, hi_text = base.partition("-")
            first = _value(field, text, lo_text, low, high, names)
            last = _value(field, text, hi_text, low, high, names)
            if first > last:
                raise _error(field, text, f"range {base!r} is reversed")
        elif base:
            first = _value(field, text, base, low, high, names)
            last = high if slash else first
        else:
            raise _error(field, text, "empty list item")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_cron(expr: str) -> CronFields:
    """Parse a cron expression (5 fields or a macro) into `CronFields`.

    Raises:
        ConfigError: naming the field that is wrong and why, or when the expression can
            never fire (``0 0 30 2 *``).
    """
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ConfigError(f"unknown cron macro {text!r}; known: {', '.join(MACROS)}")
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise ConfigError(
            "cron expression must have 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}: {expr!r}"
        )
    minutes, hours, days, months, cron_weekdays = (
        _parse_field(name, part, low, high, names)
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    )
    fields = CronFields(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset((d - 1) % 7 for d in cron_weekdays),
        day_or=not parts[2].startswith("*") and not parts[4].startswith("*"),
    )
    if not fields.can_fire():
        raise ConfigError(f"cron expression never fires: {expr!r} (no month has that day)")
    return fields
