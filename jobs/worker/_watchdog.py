"""Per-attempt timeouts: cancel an attempt's token when it runs past its deadline.

The watchdog keeps no state of its own. Each running attempt carries its deadline and
the pool's running set is the watch list, guarded by the pool's lock: starting and
finishing an attempt then cost nothing here, and the watchdog thread is woken only when
a new deadline is earlier than the one it sleeps until (rare: timeouts are mostly equal,
so later jobs have later deadlines). It also looks every `CHECK_EVERY` seconds, so that
a job starting in an idle pool (whose watchdog has no deadline to sleep until) does not
wake it either, unless its timeout is shorter than that: that wake-up would compete with
the job's start for the GIL.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING

from jobs._loops import Loop

#: The longest the watchdog sleeps (seconds): a deadline later than its next look needs
#: no wake-up.
CHECK_EVERY = 1.0

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Collection

    from jobs.worker._attempt import Attempt


class Watchdog:
    """Calls ``on_timeout(attempt)`` from its own thread once a running attempt's deadline passes.

    ``running`` is the pool's set of running attempts and ``lock`` the lock guarding it.
    """

    def __init__(
        self,
        running: Collection[Attempt],
        lock: threading.Lock,
        on_timeout: Callable[[Attempt], None],
        logger: logging.Logger,
    ) -> None:
        self._running = running
        self._cv = threading.Condition(lock)
        self._on_timeout = on_timeout
        self._target = math.inf  # the deadline the thread sleeps until
        self.loop = Loop("jobs-timeouts", self._step, logger, wake=self._wake)

    def started(self, attempt: Attempt) -> None:
        """An attempt with a deadline started running (the pool's lock is held)."""
        if attempt.deadline < self._target:
            self._cv.notify()

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def _step(self) -> float:
        with self._cv:
            now = time.monotonic()
            expired = [a for a in self._running if a.deadline <= now]
            if not expired and not self.loop.stopping.is_set():
                earliest = min((a.deadline for a in self._running), default=math.inf)
                self._target = min(earliest, now + CHECK_EVERY)
                self._cv.wait(self._target - now)
                self._target = math.inf
        for attempt in expired:
            self._on_timeout(attempt)
        return 0.0
