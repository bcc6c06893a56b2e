"""The one runner behind every background thread: a step function, stop-aware waiting, backoff.

A loop thread never dies of an error: a Redis outage (refused, reset, timed out, a
failover's READONLY) or a bug in one step is logged, the loop backs off (capped) and
tries again, so work resumes by itself when Redis comes back. Waiting is always an
`Event.wait`, so `Loop.stop` takes effect at once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from collections.abc import Callable

#: Backoff after consecutive failures: 0.1 s, 0.2 s, 0.4 s ... capped here.
MAX_BACKOFF = 5.0


def backoff_delay(failures: int, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after ``failures`` consecutive failures (capped exponential)."""
    return min(cap, 0.1 * 2.0 ** min(failures - 1, 16))


class Loop:
    """Runs ``step()`` in a named thread until stopped.

    ``step`` does one unit of work and returns how many seconds to wait before the next
    one (0 to go on at once); it may also block by itself, as long as ``wake`` (called by
    `stop`) makes it return promptly.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float],
        logger: logging.Logger,
        *,
        wake: Callable[[], None] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._logger = logger
        self._wake = wake
        self._extra = extra or {}
        self.stopping = threading.Event()
        self._nudged = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def nudge(self) -> None:
        """Cut the current wait short: the next step runs now."""
        self._nudged.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to end, wake it, and wait up to ``timeout`` s; True if it ended."""
        self.stopping.set()
        self._nudged.set()
        if self._wake is not None:
            try:
                self._wake()
            except Exception:  # waking is best effort: the loop also polls its stop flag
                self._logger.debug("waking %s failed", self.name, exc_info=True)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless stopped or nudged first; True if stopped."""
        if seconds > 0:
            self._nudged.wait(seconds)
        self._nudged.clear()
        return self.stopping.is_set()

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                delay = self._step()
            except redis.RedisError as exc:
                failures += 1
                delay = backoff_delay(failures)
                level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
                self._logger.log(
                    level,
                    "%s: Redis error (%s: %s), retrying in %.1f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    extra=self._extra,
                )
            except BaseException:  # SystemExit too: it would end the thread without a word
                failures += 1
                delay = backoff_delay(failures)
                self._logger.exception(
                    "%s: unexpected error, retrying in %.1f s", self.name, delay, extra=self._extra
                )
            else:
                if failures:
                    self._logger.info(
                        "%s: recovered after %d failed tries",
                        self.name,
                        failures,
                        extra=self._extra,
                    )
                failures = 0
            self.wait(delay)
