"""`Fetching`: the ``jobs-fetcher`` thread of a pool, which leases jobs for its slots.

It leases as many jobs as there are free slots in one call, and when the queue is empty
blocks in `WorkerQueue.wait_for_work` (so a new job starts at once and an idle pool
asks about twice per ``poll_interval``). A busy pool's outcomes ride along with its
fetches (`Outbox.send`): one call for both.
"""

from __future__ import annotations

import random
import secrets
import time
from typing import TYPE_CHECKING

from jobs.worker._attempt import Attempt, State
from jobs.worker._core import PoolCore, logger

if TYPE_CHECKING:
    from datetime import timedelta

    from jobs.worker._protocol import Fetched, WorkerQueue


class Fetching(PoolCore):
    """The fetcher's part of a `WorkerPool`."""

    _weights: list[int] | None  # of the queues, when weighted (else strict order)

    def _init_fetching(self) -> None:
        # The job types' rate limits and caps, published before the first fetch.
        self._limits_unpublished = self.registry.limits()
        self._need_fetch = True
        self._due_at: float | None = None  # monotonic time the earliest scheduled job is due
        # A fetch that may have leased jobs though its reply never came: its queue and
        # request id, sent again until answered (the queue then returns those jobs).
        self._unanswered: tuple[WorkerQueue, str] | None = None
        # How long stop() waits for a fetch in flight: its reply comes within the reply
        # timeout or never, and past a lease what it leased would be re-delivered anyway.
        self._fetch_wait = max(self._lease_s, self.queue.reply_timeout or 0.0)
        self._fetch_until: float | None = None  # monotonic; set while a fetch is in flight
        # The current round of `_exchange`: slots still to fill, jobs taken, earliest due.
        self._want = 0
        self._taken = 0
        self._round_due: float | None = None

    @property
    def lease(self) -> timedelta:
        """The lease every fetch asks for (`Fetch.lease`)."""
        return self.config.lease

    def _wake_fetcher(self) -> None:
        with self._lock:
            self._slot_free.notify_all()
        self.queues[0].wake_pool(self.id)

    def _fetch_step(self) -> float:
        with self._lock:
            while self._accepting and not self._should_fetch():
                # The claim on the outbox stays, for the outcome of the slot that ends
                # this wait (it rides along with the fetch it wakes); what already rides
                # goes to the writer now, not after the jobs still running.
                self._outbox.hand_over()
                self._slot_free.wait()
            if not self._accepting:
                return 0.0
            free = self._free_slots()
            if self._need_fetch:
                # Until the reply is in, stop() waits for what this fetch leases (see stop).
                self._fetch_until = time.monotonic() + self._fetch_wait
        if self._need_fetch and self._fetch(free) >= free:
            return 0.0  # there may be more: fetch again as soon as a slot frees
        self._outbox.release()
        timeout = self.config.poll_interval.total_seconds()
        if self._due_at is not None:
            timeout = min(timeout, self._due_at - time.monotonic())
        if timeout < 0.001:
            self._need_fetch = True
            return 0.0
        self._need_fetch = True  # if the wait fails: its marker may be taken
        woken = self.queues[0].wait_for_work(self.id, timeout, self.queues[1:])
        # A plain poll timeout needs no fetch: ready work comes with a wake-up marker, and
        # `wait_for_work` also answers True for a ready job whose marker was lost (and for
        # queues it cannot wait on, which are polled instead).
        self._need_fetch = woken or (self._due_at is not None and time.monotonic() >= self._due_at)
        return 0.0

    def _fetch(self, free: int) -> int:
        try:
            return self._exchange(free)
        finally:
            with self._lock:
                self._fetch_until = None
                self._slot_free.notify_all()  # stop() may be waiting for this fetch

    def _order(self) -> list[WorkerQueue]:
        """The queues in the order to fetch from this time."""
        order = self.queues
        if self._weights is not None:
            # A weighted random order (Efraimidis-Spirakis): each queue comes first as
            # often as its share of the weights, and none is ever starved.
            keys = [random.random() ** (1 / w) for w in self._weights]
            ranked = sorted(zip(keys, self.queues, strict=True), key=lambda kq: -kq[0])
            order = [q for _, q in ranked]
        if self._unanswered is not None:
            # Its queue first, so that the slots it was sent for are still free.
            first = self._unanswered[0]
            order = [first, *(q for q in order if q is not first)]
        return order

    def _exchange(self, free: int) -> int:
        """Write what the outbox holds and fetch up to ``free`` jobs.

        One call per queue visited: the first queue in `_order` gets the fetch and the
        outcomes of its jobs; later queues are asked only for what is still free.
        """
        if self._limits_unpublished:
            # Before the first fetch (not at the first heartbeat, which may come after
            # it): that fetch would lease jobs as if no type were limited.
            for queue in self.queues:
                queue.publish_limits(self._limits_unpublished)
            self._limits_unpublished = {}
        self._want, self._taken, self._round_due = free, 0, None
        self._outbox.send(self._outbox.claim(), self._order(), self)
        self._due_at = self._round_due
        return self._taken

    def plan(self, queue: WorkerQueue) -> tuple[int, str | None]:
        """How many jobs to lease from ``queue`` in this round, and the fetch's request id."""
        want = self._want - self._taken
        if self._unanswered is not None and self._unanswered[0] is queue:
            return want, self._unanswered[1]
        if want <= 0:
            return 0, None
        request = secrets.token_hex(8)
        # Until this call is answered, a retry is the same fetch, not another one.
        self._unanswered = (queue, request)
        return want, request

    def answered(self, queue: WorkerQueue, fetched: Fetched | None) -> None:
        """A fetch from ``queue`` was answered: queue its jobs for the slots."""
        self._unanswered = None
        if fetched is None:
            return
        self._taken += self._take(queue, fetched)
        if fetched.next_due_ms is not None:
            due = time.monotonic() + (fetched.next_due_ms - fetched.now_ms) / 1000
            self._round_due = due if self._round_due is None else min(self._round_due, due)

    def _collect_unanswered(self) -> None:
        """At stop: hand back what an unanswered fetch may have leased (else it waits a lease)."""
        if self._unanswered is None:
            return
        queue, request = self._unanswered
        self._unanswered = None
        try:
            fetched = queue.fetch(0, self.config.lease, request=request)
            queue.requeue(fetched.jobs)
        except Exception as exc:
            logger.warning(
                "could not collect the jobs of an unanswered fetch from queue %r (%s); "
                "they come back when their leases expire",
                queue.name,
                exc,
                extra=self._extra,
            )

    def _take(self, queue: WorkerQueue, fetched: Fetched) -> int:
        """Queue fetched jobs for the slots; how many."""
        lease_until = time.monotonic() + self._lease_s
        attempts = [Attempt.from_leased(j, queue, lease_until) for j in fetched.jobs]
        with self._lock:
            stopping = not self._accepting
            was_idle = not self._held
            if not stopping:
                for attempt in attempts:
                    self._held[attempt.key] = attempt
                    self._queued.append(attempt)
                self._work.notify(len(attempts))
        if stopping:
            # stop() began while this fetch was in flight, and has handed back what was
            # queued already: these go back now (stop() waits for this fetch to end).
            for attempt in attempts:
                attempt.state = State.DONE
            self._hand_back(attempts)
            return len(attempts)
        if was_idle and attempts:
            # The heartbeat slept at the idle pace; held jobs need the busy one (leases,
            # and cancellation reaching running handlers within a second).
            self._heartbeat.loop.nudge()
        return len(attempts)
