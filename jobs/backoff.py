"""Retry backoff strategies: how long to wait before the n-th retry.

A strategy is any ``callable(attempt) -> seconds`` where ``attempt`` is the 1-based
number of the retry about to be scheduled. The built-in ones are frozen attrs classes,
so they compare, hash and print well, and they serialize to a small JSON spec that is
stored with each job: the worker that retries a job uses the backoff its producer
chose, even in another process.

When to use which:

- `ExponentialBackoff` for a dependency that is down or overloaded: waits grow quickly,
  so a struggling service is not hammered. Turn on ``jitter`` when many jobs fail
  together (one outage, thousands of retries), so their retries spread out instead of
  arriving in one wave.
- `LinearBackoff` for contention that clears at a steady pace (a lock, a rate limit).
- `NoBackoff` when the failure is local and random (a lost race) and an immediate retry
  is as likely to succeed as a later one.
- `ExplicitBackoff` when you know the exact schedule you want (1 s, 10 s, 60 s ...).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from jobs._validators import instance_of
from jobs.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: Stored delays for a custom callable are computed for at most this many retries;
#: later retries reuse the last delay.
MAX_STORED_DELAYS = 1000


@runtime_checkable
class Backoff(Protocol):
    """Any callable mapping the 1-based retry number to a delay in seconds."""

    def __call__(self, attempt: int, /) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ...


def _is_seconds(value: object) -> bool:
    # Finite: an infinite delay is no schedule (and no Redis score or date can hold it).
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _non_negative_number(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not _is_seconds(value):
        raise ConfigError(f"{field.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class NoBackoff:
    """Retry at once: 0 s before every retry.

    .. versionadded:: 0.1
    """

    def __call__(self, attempt: int, /) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return 0.0


@attrs.frozen
class LinearBackoff:
    """Wait ``step * n`` seconds before the n-th retry (1 s, 2 s, 3 s ... by default).

    .. versionadded:: 0.1
    """

    step: float = attrs.field(default=1.0, validator=_non_negative_number)

    def __call__(self, attempt: int, /) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(self.step * max(attempt, 1))


@attrs.frozen
class ExponentialBackoff:
    """Wait ``base * factor ** (n - 1)`` seconds before the n-th retry, capped at ``max``.

    With the defaults: 1 s, 2 s, 4 s, 8 s ... up to one hour. With ``jitter=True`` the
    delay is drawn uniformly from ``[d / 2, d]`` ("equal jitter"): retries of jobs that
    failed together spread out, and no retry comes sooner than half the nominal delay.

    .. versionadded:: 0.1
    """

    base: float = attrs.field(default=1.0, validator=_non_negative_number)
    factor: float = attrs.field(default=2.0, validator=_non_negative_number)
    max: float = attrs.field(default=3600.0, validator=_non_negative_number)
    jitter: bool = attrs.field(default=False, validator=instance_of(bool))

    def __call__(self, attempt: int, /) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        try:
            delay = min(self.base * self.factor ** (max(attempt, 1) - 1), self.max)
        except OverflowError:  # factor ** huge: the cap applies anyway
            delay = self.max
        if self.jitter:
            delay = random.uniform(delay / 2, delay)
        return float(delay)


def _as_tuple(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(values)


@attrs.frozen
class ExplicitBackoff:
    """Wait ``delays[n - 1]`` seconds before the n-th retry; past the end, the last delay.

    .. versionadded:: 0.1
    """

    delays: tuple[float, ...] = attrs.field(converter=_as_tuple)

    @delays.validator
    def _check(self, field: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
        if not value:
            raise ConfigError("delays must not be empty")
        for item in value:
            _non_negative_number(self, field, item)

    def __call__(self, attempt: int, /) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(self.delays[min(max(attempt, 1), len(self.delays)) - 1])


#: The strategies stored by their parameters (any other callable is evaluated at enqueue).
BUILTIN_BACKOFFS = (NoBackoff, LinearBackoff, ExponentialBackoff, ExplicitBackoff)


def backoff_to_spec(backoff: Backoff, max_retries: int) -> dict[str, Any]:
    """The JSON-able spec stored with a job, from which a worker rebuilds the backoff.

    Built-in strategies store their parameters. Any other callable is evaluated now for
    retries ``1..max_retries`` (at most `MAX_STORED_DELAYS`), so arbitrary code never has
    to be shipped to the worker.

    Raises:
        ConfigError: the callable raised or returned something that is not a finite
            number >= 0.
    """
    if isinstance(backoff, NoBackoff):
        return {"kind": "none"}
    if isinstance(backoff, LinearBackoff):
        return {"kind": "linear", "step": backoff.step}
    if isinstance(backoff, ExponentialBackoff):
        return {"kind": "exponential", **attrs.asdict(backoff)}
    if isinstance(backoff, ExplicitBackoff):
        return {"kind": "explicit", "delays": list(backoff.delays)}
    delays = []
    for n in range(1, min(max(max_retries, 1), MAX_STORED_DELAYS) + 1):
        try:
            value = backoff(n)
        except Exception as exc:
            raise ConfigError(f"retry_backoff raised for attempt {n}: {exc!r}") from exc
        if not _is_seconds(value):
            raise ConfigError(
                f"retry_backoff({n}) must return a finite number of seconds >= 0, got {value!r}"
            )
        delays.append(float(value))
    return {"kind": "explicit", "delays": delays}


def backoff_from_spec(spec: Mapping[str, Any]) -> Backoff:
    """Rebuild a backoff from `backoff_to_spec`'s output.

    An unknown or malformed spec raises: the caller decides what to fall back to (a
    worker retries with the default exponential backoff, and logs why).

    Raises:
        ConfigError: the spec is malformed, or of an unknown kind.
    """
    kind = spec.get("kind")
    try:
        if kind == "none":
            return NoBackoff()
        if kind == "linear":
            return LinearBackoff(step=spec["step"])
        if kind == "exponential":
            return ExponentialBackoff(
                base=spec["base"], factor=spec["factor"], max=spec["max"], jitter=spec["jitter"]
            )
        if kind == "explicit":
            delays: Sequence[float] = spec["delays"]
            return ExplicitBackoff(delays=delays)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"malformed backoff spec {dict(spec)!r}") from exc
    raise ConfigError(f"unknown backoff kind {kind!r}")
