"""The wall-clock schedules that cron fields describe: `Daily`, `Weekly`, `Monthly`, `Cron`.

Each is a set of `CronFields` (parsed in ``_cron``) matched against local wall-clock
time; ``_tz`` turns the matching wall-clock times into instants. A schedule whose hour
field has one value is fixed-hour for DST purposes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from dateutil.relativedelta import weekday as _weekday_base
from dateutil.rrule import FR, MO, SA, SU, TH, TU, WE
from dateutil.rrule import weekday as _Weekday
from dateutil.rrule import weekdays as _WEEKDAYS

from jobs._validators import instance_of, int_in_range
from jobs.errors import ConfigError
from jobs.schedule._cron import ALL_DAYS, ALL_WEEKDAYS, LAST_DAY, CronFields, parse_cron
from jobs.schedule._tz import TzSpec, check_aware, check_tz, search, zone_for

if TYPE_CHECKING:
    from datetime import datetime, tzinfo

#: Weekdays for `Weekly` (the ``dateutil.rrule`` ones, so they also work in `RRule` rules).
MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = MO, TU, WE, TH, FR, SA, SU


class _CronLike:
    """The ``next_after`` of the schedules that `CronFields` describe."""

    __slots__ = ()
    tz: TzSpec

    def _cron_fields(self) -> CronFields:
        raise NotImplementedError

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC (DST: see ``jobs.schedule._tz``).

        Raises:
            ConfigError: ``dt`` is naive.
        """
        check_aware(dt)
        fields = self._cron_fields()

        def wall_next(wall: datetime, inclusive: bool) -> datetime | None:
            return fields.next_wall(wall, inclusive=inclusive)

        return search(len(fields.hours) == 1, wall_next, zone_for(self.tz, default_tz), dt)


def _at(
    hour: int, minute: int, days: frozenset[int] = ALL_DAYS, weekdays: frozenset[int] = ALL_WEEKDAYS
) -> CronFields:
    return CronFields(frozenset({minute}), frozenset({hour}), days, weekdays=weekdays)


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
    tz: TzSpec = attrs.field(default=None, validator=check_tz, hash=False)

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
    tz: TzSpec = attrs.field(default=None, validator=check_tz, hash=False)

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
    tz: TzSpec = attrs.field(default=None, validator=check_tz, hash=False)

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
    DST purposes (see ``jobs.schedule._tz``).

    Example::

        jobs.Cron("*/15 9-17 * * MON-FRI", tz="Europe/Berlin")

    Args:
        expr: the expression; invalid ones raise `ConfigError` naming the field.
        tz: an IANA zone name or a tzinfo; None means the scheduler's zone.

    .. versionadded:: 0.1
    """

    expr: str = attrs.field(validator=instance_of(str))
    tz: TzSpec = attrs.field(default=None, validator=check_tz, hash=False)
    _fields: CronFields = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_fields", parse_cron(self.expr))

    def _cron_fields(self) -> CronFields:
        return self._fields
