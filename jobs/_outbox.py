"""Writing finished attempts to Redis in batches, and running the user's hooks.

Handler threads never wait for Redis: they drop their outcome here and take the next
job. One writer thread sends everything that has piled up in one round trip (complete
and fail scripts in one pipeline), so under load many outcomes share a write. When
Redis is unreachable the writer keeps retrying each outcome for as long as its lease
holds (heartbeats keep extending it once Redis is back); past that, the outcome is
dropped and the job is re-delivered by the reaper: at-least-once, never a double record.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING

import attrs
import redis

from ._attempt import Attempt, Completed, Outcome
from ._loops import Loop

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from .redis_queue import Outcome as Written
    from .redis_queue import RedisQueue


@attrs.frozen
class Pending:
    """An outcome waiting to be written."""

    attempt: Attempt
    outcome: Outcome


class Outbox:
    """Batches outcomes into `RedisQueue.finish` calls from one thread."""

    def __init__(
        self,
        queue: RedisQueue,
        on_written: Callable[[Attempt, Outcome, Written], None],
        on_dropped: Callable[[Attempt], None],
        logger: logging.Logger,
    ) -> None:
        self._queue = queue
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._logger = logger
        self._cv = threading.Condition()
        self._pending: list[Pending] = []
        self._writing = 0
        self.loop = Loop(
            "jobs-writer", self._step, logger, wake=self._wake, extra={"queue": queue.name}
        )

    def put(self, attempt: Attempt, outcome: Outcome) -> None:
        """Queue an outcome for writing."""
        with self._cv:
            self._pending.append(Pending(attempt, outcome))
            self._cv.notify()

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued so far is written or dropped; True if it was."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _step(self) -> float:
        with self._cv:
            while not self._pending and not self.loop.stopping.is_set():
                self._cv.wait()
            batch, self._pending = self._pending, []
            self._writing = len(batch)
        if not batch:
            return 0.0
        try:
            self._write(batch)
        except redis.RedisError:
            now = time.monotonic()
            keep = [p for p in batch if p.attempt.lease_until > now]
            for lost in batch:
                if lost.attempt.lease_until <= now:
                    self._on_dropped(lost.attempt)
            with self._cv:
                self._pending[:0] = keep
                self._writing = 0
                self._cv.notify_all()
            raise
        with self._cv:
            self._writing = 0
            self._cv.notify_all()
        return 0.0

    def _write(self, batch: list[Pending]) -> None:
        done = [p for p in batch if isinstance(p.outcome, Completed)]
        failed = [p for p in batch if not isinstance(p.outcome, Completed)]
        completions = [
            (p.attempt.held, p.outcome.result) for p in done if isinstance(p.outcome, Completed)
        ]
        failures = [p.outcome.failure for p in failed if not isinstance(p.outcome, Completed)]
        written_done, written_failed = self._queue.finish(completions, failures)
        for pending, written in zip(done + failed, written_done + written_failed, strict=True):
            self._on_written(pending.attempt, pending.outcome, written)


class HookRunner:
    """Runs success/error hooks in their own thread, so a slow hook never delays a write."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.loop = Loop("jobs-hooks", self._step, logger, wake=lambda: self._calls.put(None))

    def call(self, hook: Callable[[], object]) -> None:
        """Run ``hook()`` soon, in the hook thread."""
        self._calls.put(hook)

    def _step(self) -> float:
        hook = self._calls.get()
        if hook is not None:
            self._run(hook)
        return 0.0

    def drain(self) -> None:
        """Run every hook queued so far in the calling thread (at shutdown)."""
        while True:
            try:
                hook = self._calls.get_nowait()
            except queue.Empty:
                return
            if hook is not None:
                self._run(hook)

    def _run(self, hook: Callable[[], object]) -> None:
        try:
            hook()
        except Exception:
            self._logger.exception("a success/error hook raised")
