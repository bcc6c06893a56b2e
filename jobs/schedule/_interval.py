"""`Every`: fire at the multiples of an interval since the Unix epoch, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import attrs

from jobs._validators import positive_duration
from jobs.errors import ConfigError
from jobs.schedule._tz import check_aware

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)


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
        check_aware(dt)
        step = self.interval // _MICROSECOND
        elapsed = (dt - _EPOCH) // _MICROSECOND
        try:
            return _EPOCH + timedelta(microseconds=(elapsed // step + 1) * step)
        except OverflowError:
            return None
