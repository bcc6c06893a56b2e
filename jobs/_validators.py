"""attrs converters and validators that raise `ConfigError` naming the field they guard.

attrs' own validators raise plain ``ValueError``/``TypeError`` with messages about
attributes; the contract wants `ConfigError` with the field's name, so the few rules we
need are written here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from .errors import ConfigError

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _check_number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{field} must be finite, got {value!r}")
    return float(value)


def _to_timedelta(value: object, field: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=_check_number(field, value))


def _duration(value: object, field: attrs.Attribute[Any]) -> timedelta:
    return _to_timedelta(value, field.name)


def _optional_duration(value: object, field: attrs.Attribute[Any]) -> timedelta | None:
    return None if value is None else _to_timedelta(value, field.name)


#: Converter: seconds (int/float) or timedelta -> timedelta; ConfigError naming the field.
duration: attrs.Converter[object, timedelta] = attrs.Converter(_duration, takes_field=True)
#: As `duration`, but None means zero.
duration_or_zero: attrs.Converter[object, timedelta] = attrs.Converter(
    lambda value, field: _to_timedelta(0 if value is None else value, field.name),
    takes_field=True,
)
#: As `duration`, but None passes through.
optional_duration: attrs.Converter[object, timedelta | None] = attrs.Converter(
    _optional_duration, takes_field=True
)


def positive_duration(inst: object, field: attrs.Attribute[Any], value: timedelta | None) -> None:
    """Validator: the duration, when set, is > 0."""
    if value is not None and value <= timedelta(0):
        raise ConfigError(f"{field.name} must be > 0, got {value.total_seconds()!r} s")


def non_negative_duration(inst: object, field: attrs.Attribute[Any], value: timedelta) -> None:
    """Validator: the duration is >= 0."""
    if value < timedelta(0):
        raise ConfigError(f"{field.name} must be >= 0, got {value.total_seconds()!r} s")


def int_in_range(low: int | None = None, high: int | None = None) -> Validator:
    """Validator factory: an int (not a bool) within ``[low, high]``."""

    def check(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field.name} must be an integer, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'' if low is None else low}..{'' if high is None else high}"
            raise ConfigError(f"{field.name} must be in {bounds}, got {value!r}")

    return check


def instance_of(*types: type, optional: bool = False) -> Validator:
    """Validator factory: ``isinstance(value, types)`` (or None when ``optional``)."""
    names = " or ".join(t.__name__ for t in types)

    def check(inst: object, field: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, types):
            raise ConfigError(f"{field.name} must be {names}, got {type(value).__name__}")

    return check


def callable_or_none(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """Validator: a callable, or None."""
    if value is not None and not callable(value):
        raise ConfigError(f"{field.name} must be callable, got {type(value).__name__}")


def name_like(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """Validator: a non-empty str without braces (they would break the key's hash tag)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field.name} must be a non-empty string, got {value!r}")
    if any(c in value for c in "{}") or any(c.isspace() for c in value):
        raise ConfigError(f"{field.name} must not contain braces or whitespace, got {value!r}")


def to_seconds(value: timedelta | float | int) -> float:
    """Seconds as a float, from a timedelta or a number."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
