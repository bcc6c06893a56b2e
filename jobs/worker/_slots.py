"""`Slots`: the ``jobs-worker-N`` threads of a pool, which run attempts one at a time.

Each slot loop takes queued attempts from a local deque (no executor submission per
job), runs the handler and puts the attempt, its outcome decided, in the outbox.

An attempt that is timed out, cancelled or loses its lease is *abandoned*: its token is
cancelled, its outcome decided without waiting, and its slot handed to a fresh loop at
once; when its handler finally returns, the result is dropped (and would be refused by
the lease fence anyway).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from jobs import _codec
from jobs.context import CancelReason
from jobs.errors import JobTimeout
from jobs.worker import _attempt
from jobs.worker._attempt import State
from jobs.worker._core import CONFIRM_AFTER, PoolCore, logger
from jobs.worker._events import Interruption

if TYPE_CHECKING:
    from jobs.worker._attempt import Attempt
    from jobs.worker._protocol import Outcome


class Slots(PoolCore):
    """The slots' part of a `WorkerPool`: running attempts, abandoning them."""

    def _slot(self) -> None:
        """A slot's loop: runs queued attempts one at a time until the slots close.

        Only that ends it, or its attempt being abandoned (a fresh loop has its place).
        An error anywhere else is logged and the loop goes on, its attempt failed or
        handed back: a loop that ended silently would hold its job for ever, leases
        renewed, and leave the pool a thread short.
        """
        while True:
            attempt: Attempt | None = None
            try:
                with self._lock:
                    while not self._queued and self._slots_open:
                        self._work.wait()
                    if not self._queued:
                        return
                    attempt = self._queued.popleft()
                    attempt.state = State.RUNNING
                    self._running.add(attempt)
                    timeout = attempt.job.timeout if attempt.job is not None else None
                    if timeout is not None:
                        attempt.deadline = time.monotonic() + timeout.total_seconds()
                        self._watchdog.started(attempt)
                    waited = time.monotonic() - (attempt.lease_until - self._lease_s)
                if waited > CONFIRM_AFTER and not self._still_held(attempt):
                    with self._lock:
                        if attempt.state is State.ABANDONED:
                            self._stuck -= 1  # this thread leaves; its replacement runs
                            self._returned(attempt)
                            return
                    continue
                if self._events is not None:
                    self._events.started(attempt.queue.name, attempt.job_type, attempt.job, waited)
                began = time.monotonic()
                outcome = self._run(attempt)
                ended = time.monotonic()
                with self._lock:
                    if attempt.state is State.ABANDONED:
                        self._stuck -= 1  # this thread leaves; its replacement already runs
                        self._returned(attempt)
                        logger.debug(
                            "late outcome of an abandoned attempt discarded",
                            extra=attempt.log_extra(),
                        )
                        return
                    # (a timed-out one keeps the time it timed out)
                    attempt.ended = ended if self._events is not None else 0.0
                    attempt.state = State.FINISHED
                    self._ran_for(ended - began)
                    self._running.discard(attempt)
                    # Wake the fetcher only when it has something to do: it then takes this
                    # outcome along with its fetch, one round trip for both.
                    fetch_soon = self._accepting and self._should_fetch()
                    if fetch_soon or not self._accepting:  # the latter: stop() may be waiting
                        self._slot_free.notify()
                    # Under the lock, in the same step as leaving `_running`: stop() must
                    # never see this attempt in neither place (it would stop the writer
                    # without it), and the fetcher must see this outcome before it next
                    # waits for a slot.
                    attempt.outcome = outcome
                    self._outbox.put(attempt, fetch_soon=fetch_soon)
            except BaseException as exc:
                self._slot_failed(attempt, exc)

    def _run(self, attempt: Attempt) -> Outcome:
        """The attempt's outcome; an error around its handler (a bug) fails it too."""
        try:
            return _attempt.run(attempt, self.registry, self.client)
        except BaseException as exc:
            logger.error(
                "job %s: unexpected error around its handler, attempt failed: %s",
                attempt.leased.job_id,
                _codec.describe(exc),
                exc_info=exc,
                extra=attempt.log_extra(),
            )
            return _attempt.fail(attempt, exc, permanent=False)

    def _slot_failed(self, attempt: Attempt | None, exc: BaseException) -> None:
        """A slot's own bookkeeping raised: log it; the job it had goes back to the queue.

        Not when its outcome is already decided: abandoned, or finished (what follows
        that, `Outbox.put`, is a list append).
        """
        logger.error(
            "worker slot: unexpected error; the slot goes on",
            exc_info=exc,
            extra=self._extra if attempt is None else attempt.log_extra(),
        )
        if attempt is None:
            return
        with self._lock:
            self._returned(attempt)
            if attempt.state not in (State.QUEUED, State.RUNNING):
                return
            self._running.discard(attempt)
            attempt.state = State.DONE
            self._release(attempt)
            self._slot_free.notify()
        self._hand_back([attempt])

    def _still_held(self, attempt: Attempt) -> bool:
        """Whether an attempt about to start still holds its lease; if not, drop it."""
        reason = self._heartbeat.confirm(attempt)
        if reason is None:
            return True
        with self._lock:
            if attempt.state is not State.RUNNING:
                return False  # abandoned meanwhile (timed out, shut down)
            self._running.discard(attempt)
            attempt.state = State.DONE
            self._release(attempt)
            self._slot_free.notify()
        self._interrupted_by(attempt, reason)
        level = logging.INFO if reason is CancelReason.CANCELLED else logging.WARNING
        logger.log(
            level,
            "job %s: %s while it waited for a thread; not started",
            attempt.leased.job_id,
            reason,
            extra=attempt.log_extra(),
        )
        return False

    def _returned(self, attempt: Attempt) -> None:
        """An abandoned attempt's handler returned (the lock is held)."""
        if attempt in self._interrupted:
            self._interrupted.discard(attempt)
            self._slot_free.notify_all()  # stop() may be waiting for it

    def _abandon_running(self, attempt: Attempt) -> None:
        """Give a running attempt's slot to a fresh loop (the lock is held)."""
        attempt.state = State.ABANDONED
        self._running.discard(attempt)
        self._stuck += 1
        if self._slots_open and self._executor is not None:
            self._executor.submit(self._slot)
        if self._stuck > self.config.num_workers and self._stuck % self.config.num_workers == 1:
            logger.warning(
                "%d abandoned handlers ignore their cancellation and still run, each holding "
                "a thread; make handlers check ctx.cancelled or use ctx.sleep",
                self._stuck,
                extra=self._extra,
            )
        self._slot_free.notify()

    def _abandon(self, attempt: Attempt, reason: CancelReason) -> None:
        """The heartbeat found the job cancelled or its lease lost: stop working on it."""
        with self._lock:
            if attempt.state is State.QUEUED:
                self._queued.remove(attempt)
                attempt.state = State.DONE
                self._slot_free.notify()
            elif attempt.state is State.RUNNING:
                self._abandon_running(attempt)
            else:
                return  # finished: its write is fenced like any other
            self._release(attempt)
        attempt.token.cancel(reason)
        self._interrupted_by(attempt, reason)
        level = logging.INFO if reason is CancelReason.CANCELLED else logging.WARNING
        logger.log(
            level,
            "job %s: %s, handler told to stop",
            attempt.leased.job_id,
            reason,
            extra=attempt.log_extra(),
        )

    def _on_timeout(self, attempt: Attempt) -> None:
        # The outcome first: were building it to raise, the attempt would stay running,
        # not abandoned without one (the watchdog logs the error and comes back to it).
        # Decided outside the lock (a custom backoff is user code), queued under it in the
        # same step as leaving `_running`, as in `_slot`.
        timeout = attempt.job.timeout if attempt.job is not None else None
        seconds = timeout.total_seconds() if timeout is not None else 0.0
        exc = JobTimeout(f"attempt {attempt.number} ran past its timeout of {seconds:g} s")
        outcome = _attempt.fail(attempt, exc, permanent=False)
        with self._lock:
            if attempt.state is not State.RUNNING:
                return
            attempt.ended = time.monotonic()
            self._abandon_running(attempt)
            attempt.outcome = outcome
            self._outbox.put(attempt)
        attempt.token.cancel(CancelReason.TIMEOUT)
        if self._events is not None:
            self._events.interrupted(attempt.queue.name, attempt.job_type, Interruption.TIMED_OUT)

    def _interrupted_by(self, attempt: Attempt, reason: CancelReason) -> None:
        """Tell the events observer that the heartbeat took a job away from this pool."""
        if self._events is not None:
            why = (
                Interruption.CANCELLED
                if reason is CancelReason.CANCELLED
                else Interruption.LEASE_LOST
            )
            self._events.interrupted(attempt.queue.name, attempt.job_type, why)
