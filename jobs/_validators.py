"""attrs converters and validators that raise `ConfigError` naming the field they guard.

attrs' own validators raise plain ``ValueError``/``TypeError`` with messages about
attributes; the contract wants `ConfigError` with the field's name, so the few rules we
need are written here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from jobs.errors import ConfigError

if TYPE_CHECKING:
    import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def duration(value: object) -> timedelta:
    """Converter: seconds (int or float) or a timedelta, as a timedelta.

    Anything else passes through unchanged, for the field's validator to reject with the
    field's name (converters are not told which field they convert).
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return timedelta(seconds=value)
        except OverflowError:
            pass
    return cast("timedelta", value)


def optional_duration(value: object) -> timedelta | None:
    """Converter: as `duration`, but None passes through."""
    return None if value is None else duration(value)


def duration_or_zero(value: object) -> timedelta:
    """Converter: as `duration`, but None means zero."""
    return duration(0 if value is None else value)


def _require_duration(field: attrs.Attribute[Any], value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise ConfigError(
            f"{field.name} must be a finite number of seconds or a timedelta, got {value!r}"
        )
    return value


def positive_duration(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """Validator: a duration (see `duration`), None or > 0."""
    if value is not None and (seconds := _require_duration(field, value)) <= timedelta(0):
        raise ConfigError(f"{field.name} must be > 0, got {seconds.total_seconds()!r} s")


def non_negative_duration(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """Validator: a duration (see `duration`), >= 0."""
    if (seconds := _require_duration(field, value)) < timedelta(0):
        raise ConfigError(f"{field.name} must be >= 0, got {seconds.total_seconds()!r} s")


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


def require_text(name: str, value: object) -> None:
    """Raise `ConfigError` naming ``name`` unless ``value`` is a non-empty str Redis can hold.

    A lone surrogate (a str decoded with ``surrogateescape``, say) has no UTF-8 form: redis-py
    would raise a bare ``UnicodeEncodeError`` while sending the command.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{name} must be valid Unicode text, got {value!r} (a lone surrogate at {exc.start})"
        ) from None


#: What a queue name or key prefix must not contain. A queue's keys start with
#: ``{prefix:name}:``, so a ``:`` in either would let two (prefix, name) pairs share
#: keys (prefix "acme", queue "eu:default" read prefix "acme:eu"'s jobs); braces would
#: break the hash tag; and an ACL key pattern (``~{PREFIX:*``) would read ``* ? [ ] \``
#: as wildcards, granting one tenant's user other tenants' keys.
NAME_FORBIDDEN = ":{}*?[]\\"


def check_name(what: str, value: object) -> None:
    """A queue name or prefix: a non-empty str without whitespace or `NAME_FORBIDDEN`.

    Raises:
        ConfigError: naming ``what``.
    """
    require_text(what, value)
    value = cast("str", value)
    if any(c in NAME_FORBIDDEN or c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(
            f"{what} must not contain whitespace, control characters or any of "
            f"{NAME_FORBIDDEN!r} (they would mix up key names and ACL patterns), got {value!r}"
        )


def name_like(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    """Validator: `check_name` of the field."""
    check_name(field.name, value)


def to_seconds(value: timedelta | float | int) -> float:
    """Seconds as a float, from a timedelta or a number."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
