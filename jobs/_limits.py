"""Flow limits of a job type: a rate limit (``"10/s"``) and a concurrency cap.

Declared with the type (`Registry.register`'s ``rate_limit`` and ``max_concurrency``),
overridable per queue (`RedisQueueConfig.rate_limits` and ``concurrency_limits``), and
enforced by the fetch script in Redis (see the flow control section of
``jobs/queue/lua/_lib.lua``), so that they hold across every process and host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from jobs.errors import ConfigError

#: The units a rate limit may name, in milliseconds.
PERIODS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
#: The largest count a rate limit or cap may name (far past what one Redis can start).
MAX_COUNT = 1_000_000_000
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


@attrs.frozen
class RateLimit:
    """At most ``count`` job starts per period, evenly spaced (``"10/s"``, ``"5/m"``, ``"100/h"``).

    Starts are spaced by ``period / count``, with a burst of up to
    ``max(1, count // 10)`` after a pause: over any run the rate is exact, and any one
    period sees at most ``count + burst - 1`` starts.

    .. versionadded:: 0.1
    """

    count: int
    period_ms: int

    @classmethod
    def parse(cls, value: object, field: str = "rate_limit") -> RateLimit:
        """``"N/s"``, ``"N/m"`` or ``"N/h"`` (or a `RateLimit`), N in 1..10**9.

        Raises:
            ConfigError: anything else, naming ``field``.
        """
        if isinstance(value, RateLimit):
            return value
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None or not 1 <= int(match[1]) <= MAX_COUNT:
            raise ConfigError(
                f"{field} must be a string like '10/s', '5/m' or '100/h' "
                f"(1 to {MAX_COUNT} per second, minute or hour), got {value!r}"
            )
        return cls(int(match[1]), PERIODS_MS[match[2]])

    def __str__(self) -> str:
        unit = {ms: unit for unit, ms in PERIODS_MS.items()}[self.period_ms]
        return f"{self.count}/{unit}"


def parse_cap(value: object, field: str = "max_concurrency") -> int:
    """A concurrency cap: an int in 1..10**9.

    Raises:
        ConfigError: anything else, naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ConfigError(f"{field} must be an int from 1 to {MAX_COUNT}, got {value!r}")
    return value


@attrs.frozen
class TypeLimits:
    """One job type's flow limits; None: no such limit.

    .. versionadded:: 0.1
    """

    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None

    def __bool__(self) -> bool:
        return self.rate_limit is not None or self.max_concurrency is not None

    def encode(self) -> str:
        """As limits.lua stores it: ``'count period_ms cap'`` (0: none), '' for no limit."""
        if not self:
            return ""
        rate = self.rate_limit
        count, period = (rate.count, rate.period_ms) if rate is not None else (0, 0)
        return f"{count} {period} {self.max_concurrency or 0}"

    @classmethod
    def decode(cls, text: str) -> TypeLimits:
        """The inverse of `encode` (a damaged value reads as no limit)."""
        try:
            count, period, cap = (int(part) for part in text.split())
            rate = RateLimit(count, period) if count > 0 and period in PERIODS_MS.values() else None
        except ValueError:
            return cls()
        return cls(rate, cap if cap > 0 else None)

    def describe(self) -> str:
        """For people: ``'10/s, at most 3 at once'``, ``'none'``."""
        parts = []
        if self.rate_limit is not None:
            parts.append(str(self.rate_limit))
        if self.max_concurrency is not None:
            parts.append(f"at most {self.max_concurrency} at once")
        return ", ".join(parts) or "none"


def rate_limits(value: object) -> dict[str, RateLimit | None]:
    """Converter for `RedisQueueConfig.rate_limits`: job type -> "N/s" etc., or None."""
    return _overrides(value, "rate_limits", lambda v, f: RateLimit.parse(v, f))


def concurrency_limits(value: object) -> dict[str, int | None]:
    """Converter for `RedisQueueConfig.concurrency_limits`: job type -> cap, or None."""
    return _overrides(value, "concurrency_limits", parse_cap)


def _overrides(value: object, field: str, parse: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field} must be a mapping of job type to limit, got {value!r}")
    out: dict[str, Any] = {}
    for name, limit in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{field} keys must be job type names, got {name!r}")
        out[name] = None if limit is None else parse(limit, f"{field}[{name!r}]")
    return out
