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

Daylight saving time: a schedule that can fire at only one hour of the day (`Daily`,
`Weekly`, `Monthly`, ``Cron("30 2 * * *")``) fires once per matching wall-clock time,
even across a gap or a fold; any other fires at every real instant whose wall-clock
time matches. The exact rules are in ``jobs.schedule._tz``.

The schedules live in one module per family (``_interval``: `Every`; ``_calendar``:
`Daily`, `Weekly`, `Monthly`, `Cron`; ``_rrule``: `RRule`); this module is where they are
imported from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from jobs.schedule._calendar import FRIDAY as FRIDAY
from jobs.schedule._calendar import MONDAY as MONDAY
from jobs.schedule._calendar import SATURDAY as SATURDAY
from jobs.schedule._calendar import SUNDAY as SUNDAY
from jobs.schedule._calendar import THURSDAY as THURSDAY
from jobs.schedule._calendar import TUESDAY as TUESDAY
from jobs.schedule._calendar import WEDNESDAY as WEDNESDAY
from jobs.schedule._calendar import Cron as Cron
from jobs.schedule._calendar import Daily as Daily
from jobs.schedule._calendar import Monthly as Monthly
from jobs.schedule._calendar import Weekly as Weekly
from jobs.schedule._interval import Every as Every
from jobs.schedule._rrule import RRule as RRule
from jobs.schedule._tz import TzSpec as TzSpec

if TYPE_CHECKING:
    from datetime import datetime, tzinfo


class Schedule(Protocol):
    """What the scheduler needs from a schedule: its next fire time.

    .. versionadded:: 0.1
    """

    def next_after(self, dt: datetime, *, default_tz: tzinfo | None = None) -> datetime | None:
        """The first fire time strictly after ``dt``, in UTC; None if it never fires again."""
        ...
