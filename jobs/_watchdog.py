"""Per-attempt timeouts: cancel an attempt's token when it runs past its deadline.

At most ``num_workers`` attempts run at once, so the watchdog keeps a plain dict and
scans it for the earliest deadline; a heap would need lazy deletion for every attempt
that finishes in time (nearly all of them).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ._loops import Loop

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from ._attempt import Attempt


class Watchdog:
    """Calls ``on_timeout(attempt)`` from its own thread once an attempt's deadline passes."""

    def __init__(self, on_timeout: Callable[[Attempt], None], logger: logging.Logger) -> None:
        self._on_timeout = on_timeout
        self._cv = threading.Condition()
        self._deadlines: dict[Attempt, float] = {}
        self._target = float("inf")  # the deadline the thread is currently waiting for
        self.loop = Loop("jobs-timeouts", self._step, logger, wake=self._wake)

    def watch(self, attempt: Attempt, seconds: float) -> None:
        """Start the clock for ``attempt``: it times out ``seconds`` from now."""
        deadline = time.monotonic() + seconds
        with self._cv:
            self._deadlines[attempt] = deadline
            if deadline < self._target:
                self._cv.notify()

    def forget(self, attempt: Attempt) -> None:
        """The attempt ended in time."""
        with self._cv:
            self._deadlines.pop(attempt, None)

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _step(self) -> float:
        with self._cv:
            now = time.monotonic()
            expired = [a for a, deadline in self._deadlines.items() if deadline <= now]
            for attempt in expired:
                del self._deadlines[attempt]
            if not expired and not self.loop.stopping.is_set():
                self._target = min(self._deadlines.values(), default=float("inf"))
                self._cv.wait(None if self._target == float("inf") else self._target - now)
                self._target = float("inf")
        for attempt in expired:
            self._on_timeout(attempt)
        return 0.0
