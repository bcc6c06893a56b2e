"""What every part of `MemoryQueue` shares: its clock, its lock, its state, its settings."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

from jobs import _codec
from jobs.errors import ConfigError, RedisUnavailable
from jobs.testing._memory_state import QueueState

if TYPE_CHECKING:
    from collections.abc import Callable


class ManualClock:
    """A clock that moves only when told to: pass it to `MemoryQueue` as ``clock``.

    Calling it returns the time in seconds since the epoch, like `time.time`.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 UTC
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock ahead by ``seconds``."""
        by = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if by < 0:
            raise ConfigError(f"seconds must be >= 0 (the clock never goes back), got {by}")
        with self._lock:
            self._now += by


class _Store:
    """What the queues of one `MemoryQueue` family share: a lock, a clock, wake-ups."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.changed = threading.Condition(threading.RLock())
        self.queues: dict[str, QueueState] = {}
        self.pool_wakes: set[str] = set()
        self.unavailable = False

    def now(self) -> int:
        return round(self.clock() * 1000)


class MemoryBase:
    """The queue's name, settings, store and state; the lock every call takes."""

    def __init__(
        self,
        name: str = "default",
        *,
        clock: Callable[[], float] | None = None,
        max_lost_leases: int = 5,
        completed_ttl: timedelta = timedelta(days=1),
        failed_ttl: timedelta = timedelta(days=7),
        max_failed_jobs: int = 10_000,
        max_completed_jobs: int = 100_000,
        max_payload_bytes: int = 1 << 20,
        max_result_bytes: int = 1 << 20,
        _store: _Store | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        self._name = name
        self._settings: dict[str, Any] = {
            "max_lost_leases": max_lost_leases,
            "completed_ttl": completed_ttl,
            "failed_ttl": failed_ttl,
            "max_failed_jobs": max_failed_jobs,
            "max_completed_jobs": max_completed_jobs,
            "max_payload_bytes": max_payload_bytes,
            "max_result_bytes": max_result_bytes,
        }
        self._max_completed = max_completed_jobs
        self._limits_warned = False  # see MemoryQueue.publish_limits
        self._max_payload = max_payload_bytes
        self._max_result = max_result_bytes
        self._store = _store or _Store(clock or time.time)
        self._state = self._store.queues.setdefault(
            name,
            QueueState(
                max_lost_leases=max_lost_leases,
                failed_ttl_ms=_codec.to_ms(failed_ttl),
                completed_ttl_ms=_codec.to_ms(completed_ttl),
                keep_failed=max_failed_jobs,
            ),
        )

    # -- what it is -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def address(self) -> str:
        """Where the queue lives, for messages."""
        return "memory"

    @property
    def max_payload_bytes(self) -> int:
        """The largest encoded payload `Client.enqueue` accepts."""
        return self._max_payload

    @property
    def max_result_bytes(self) -> int:
        """The largest encoded result stored."""
        return self._max_result

    @property
    def reply_timeout(self) -> float | None:
        """None: a call answers at once."""
        return None

    def __repr__(self) -> str:
        return f"<MemoryQueue {self._name!r}>"

    def sibling(self, name: str) -> Self:
        """The queue called ``name`` in the same memory, with this queue's settings."""
        return type(self)(name, _store=self._store, **self._settings)

    def set_unavailable(self, unavailable: bool) -> None:
        """Make every call raise `RedisUnavailable` (True) until set back (False).

        What a lost connection looks like to its callers, for testing how they ride it out.
        """
        with self._store.changed:
            self._store.unavailable = unavailable
            self._store.changed.notify_all()

    def close(self) -> None:
        """Nothing to release (the protocol's `close`)."""

    def _enter(self) -> tuple[QueueState, int]:
        """The state and the time, under the lock (held by the caller)."""
        if self._store.unavailable:
            raise RedisUnavailable(f"queue {self._name!r} made unavailable (set_unavailable)")
        return self._state, self._store.now()

    def _announce(self) -> None:
        """Wake every waiter: work may be there, or jobs may have finished."""
        self._store.changed.notify_all()
