"""The pool's heartbeat: registry record, lease extension, cancellation check and reaping.

One call per queue and beat does all four (`WorkerQueue.heartbeat`; for Redis,
heartbeat.lua and reap.lua in one pipeline).
While the pool holds jobs it beats every `BUSY_INTERVAL` at least (every lease/3 when
that is shorter), which is also how a ``Client.cancel`` from any process reaches a
running handler within a second, without a pub/sub connection that could silently miss
a message. An idle pool beats every lease/2 (at most every `IDLE_INTERVAL`), and also
right when the earliest lease in the queue expires, so a dead worker's job is
re-delivered about one lease after its last heartbeat.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from jobs._loops import Loop
from jobs.context import CancelReason
from jobs.errors import JobsError
from jobs.worker._protocol import LeaseState

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping, Sequence

    from jobs.worker._attempt import Attempt
    from jobs.worker._protocol import WorkerQueue

#: Longest gap between beats while the pool holds jobs: bounds cancellation latency.
BUSY_INTERVAL = 0.5
#: Longest gap between beats of an idle pool.
IDLE_INTERVAL = 15.0
#: How often a beat also trims the finished-job indexes of records that expired.
TRIM_INTERVAL = 60.0

#: Why an attempt must stop, per lease that is no longer held.
_REASONS = {LeaseState.CANCELLED: CancelReason.CANCELLED, LeaseState.LOST: CancelReason.LEASE_LOST}


class Heartbeat:
    """The heartbeat loop of one pool."""

    def __init__(
        self,
        queues: Sequence[WorkerQueue],
        pool_id: str,
        num_workers: int,
        lease: timedelta,
        held: Callable[[], Sequence[Attempt]],
        on_lost: Callable[[Attempt, CancelReason], None],
        logger: logging.Logger,
        declarations: Mapping[str, str] | None = None,
    ) -> None:
        self._queues = queues
        # The pool's job types and their declared settings, published on the first
        # beat that reaches the queue (for producers without the registry).
        self._declarations = dict(declarations or {})
        self._pool_id = pool_id
        self._lease = lease
        self._held = held
        self._on_lost = on_lost
        self._logger = logger
        self._policy_checked = False
        lease_s = lease.total_seconds()
        self._busy = min(lease_s / 3, BUSY_INTERVAL)
        # Every lease/2 is enough to see a job leased since the last beat before its
        # lease can expire, and then the beat is timed to that expiry (see `beat`).
        self._idle = min(lease_s / 2, IDLE_INTERVAL)
        # A record outlives a few missed beats, never a dead pool by much.
        self._first = True
        self._last = self._due = 0.0  # monotonic: the last beat, and when the next is due
        self._trim_due = 0.0
        self._record_ttl = timedelta(seconds=max(3 * self._idle, 2.0))
        self._info: dict[str, object] = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "num_workers": num_workers,
            "in_flight": 0,
        }
        self.loop = Loop("jobs-heartbeat", self.beat, logger, extra={"queue": queues[0].name})

    def confirm(self, attempt: Attempt) -> CancelReason | None:
        """Check (and extend) one attempt's lease now; why it must not run, or None.

        For a job about to start after waiting for a thread: a cancellation since the
        last beat would otherwise be noticed only after its handler started. A queue
        error answers None: the next beat decides, as for a running job.
        """
        sent = time.monotonic()
        try:
            state = attempt.queue.extend(self._pool_id, [attempt.leased], self._lease)[0]
        except JobsError:
            return None
        if state is LeaseState.HELD:
            attempt.lease_until = sent + self._lease.total_seconds()
            return None
        return _REASONS[state]

    def beat(self) -> float:
        """One beat of every queue the pool serves; returns the seconds until the next one.

        Called early (the pool took jobs while idle: `Loop.nudge`), it only moves the next
        beat to the busy pace: a beat right away would compete with the new job's start.
        """
        held = self._held()
        now = time.monotonic()
        if now < self._due:
            self._due = min(self._due, self._last + (self._busy if held else self._idle))
            if now < self._due:
                return self._due - now
        if not self._policy_checked:
            # Once per pool, here rather than in start(), which must not wait for the queue.
            # The queues a pool serves share one server.
            self._policy_checked = True
            self._queues[0].warn_if_evicting(self._logger)
        if self._declarations:
            for queue in self._queues:
                queue.declare_types(self._declarations)
            self._declarations = {}
        self._info["in_flight"] = len(held)
        delay = self._busy if held else self._idle
        first = self._first
        trim = now >= self._trim_due
        if trim:
            self._trim_due = now + TRIM_INTERVAL
        for queue in self._queues:
            mine = [a for a in held if a.queue is queue]
            progress = [a.take_progress() for a in mine]
            sent = time.monotonic()
            try:
                now_ms, states, next_expiry_ms = queue.heartbeat(
                    self._pool_id,
                    self._info,
                    self._record_ttl,
                    [a.leased for a in mine],
                    self._lease,
                    first=first,
                    trim=trim,
                    progress=progress,
                )
            except BaseException:
                for attempt, value in zip(mine, progress, strict=True):
                    if value and attempt.progress is None:
                        attempt.progress = value  # not stored: the next beat sends it
                raise
            lease_until = sent + self._lease.total_seconds()
            for attempt, state in zip(mine, states, strict=True):
                if state is LeaseState.HELD:
                    attempt.lease_until = lease_until
                else:
                    self._on_lost(attempt, _REASONS[state])
            if next_expiry_ms is not None:
                # Reap right after the earliest lease runs out (the queue's clock: no skew).
                delay = min(delay, max((next_expiry_ms - now_ms) / 1000 + 0.005, 0.005))
        self._first = False
        self._last = now
        self._due = now + delay
        return delay
