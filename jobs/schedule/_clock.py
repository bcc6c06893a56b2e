"""The scheduler's clock: the Redis server's time, carried forward by the monotonic clock.

Redis ``TIME`` is read at start and before each round that fires; in between, the
monotonic clock carries it forward, so schedulers on hosts with skewed clocks fire at the
same instants and a step of the host's clock (NTP, a VM resumed) changes nothing. A
suspended host stops the monotonic clock but not the wall clock: when the two disagree,
`SchedulerClock.jumped` says so and the scheduler asks Redis again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from jobs.errors import ConfigError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from jobs.queue.redis_queue import RedisQueue

#: A logger the scheduler accepts.
AnyLogger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"

#: Disagreement between the wall and monotonic clocks since the last Redis ``TIME`` that
#: means the host's clock was stepped or the host was suspended, in seconds.
CLOCK_JUMP = 1.0


def aware(value: object, what: str) -> datetime:
    """``value`` in UTC if it is an aware datetime.

    Raises:
        ConfigError: it is not, with a message naming ``what``.
    """
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigError(f"{what} must be an aware datetime, got {value!r}")
    return value.astimezone(UTC)


class SchedulerClock:
    """The current instant for a scheduler: its test clock, or Redis time anchored locally.

    Not thread-safe by itself: the scheduler syncs it from one round at a time, and a
    reader racing a sync sees the old anchor or the new one, both valid.
    """

    def __init__(
        self,
        queue: RedisQueue,
        logger: AnyLogger,
        extra: dict[str, object],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._queue = queue
        self._logger = logger
        self._extra = extra
        #: ``() -> aware datetime`` given by a test; None: Redis time.
        self.custom = clock
        #: Seconds to add to time.time() to get the Redis server's time (for the log).
        self._offset = 0.0
        #: (Redis time, monotonic time, wall time) in seconds at the last Redis TIME.
        self._anchor: tuple[float, float, float] | None = None

    def now(self) -> datetime:
        """The current instant in UTC: Redis time since the first `sync`, local before."""
        if self.custom is not None:
            return aware(self.custom(), "clock()")
        anchor = self._anchor
        if anchor is None:
            return datetime.fromtimestamp(time.time(), UTC)
        server, monotonic, _ = anchor
        return datetime.fromtimestamp(server + time.monotonic() - monotonic, UTC)

    def jumped(self) -> bool:
        """Whether the host's clock was stepped, or the host suspended, since the last sync."""
        anchor = self._anchor
        if anchor is None:
            return True
        _, monotonic, wall = anchor
        return abs((time.time() - wall) - (time.monotonic() - monotonic)) > CLOCK_JUMP

    def sync(self) -> None:
        """Anchor on Redis ``TIME`` again (one round trip).

        Raises:
            redis.RedisError: Redis failed; the old anchor stays.
        """
        mono_before, wall_before = time.monotonic(), time.time()
        server = self._queue.server_time_ms() / 1000
        mono_after, wall_after = time.monotonic(), time.time()
        wall = (wall_before + wall_after) / 2
        offset = server - wall
        if abs(offset - self._offset) > CLOCK_JUMP:
            self._logger.info(
                "local clock is %+.3f s off the Redis server's; scheduling on Redis time",
                -offset,
                extra=self._extra,
            )
        self._offset = offset
        self._anchor = (server, (mono_before + mono_after) / 2, wall)
