"""`Fetching`: the ``jobs-fetcher`` thread of a pool, which leases jobs for its slots.

It leases as many jobs as there are free slots in one call, and when the queue is empty
blocks in `WorkerQueue.wait_for_work` (so a new job starts at once and an idle pool
asks about twice per ``poll_interval``). A busy pool's outcomes ride along with its
fetches (`Outbox.send`): one call for both. While short jobs drain a backlog, the next
such call goes before the jobs of the last one are taken (`Fetching._pipelined`).
"""

from __future__ import annotations

import random
import secrets
import time
from typing import TYPE_CHECKING

from jobs.errors import JobsError
from jobs.worker._attempt import Attempt, State
from jobs.worker._core import PoolCore, logger

#: Seconds between looks at the queues' best ready jobs while fetched jobs wait for a
#: slot (`Fetching._outrun`): how long a better job can wait behind the buffer.
PEEK_INTERVAL = 0.1
#: While the pool fetches ahead (short jobs, a backlog), the fetcher first waits this long
#: for the slots to free room for its next fetch, and the outcomes decided meanwhile ride
#: with that fetch (`Outbox.hold`); past it they go to the writer, as they otherwise do
#: at once. The longest an outcome waits for its write on that account (seconds).
RIDE_WAIT = 0.005

if TYPE_CHECKING:
    from collections.abc import Callable
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
        self._peeked_at = 0.0  # monotonic; when `_outrun` last looked at the queues
        # Whether the last fetch found jobs: an idle pool then fetches with its wait.
        self._hot = False
        # The current round of `_exchange`: slots still to fill, jobs taken, earliest due.
        self._want = 0
        self._taken = 0
        self._round_due: float | None = None
        self._round_more = False  # whether a queue of the round had ready jobs left

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
            buffered = self._wait_for_room()
            if buffered is None:
                if not self._accepting:
                    return 0.0
                free = self._free_slots()
                if self._need_fetch:
                    # Until the reply is in, stop() waits for what this fetch leases.
                    self._fetch_until = time.monotonic() + self._fetch_wait
        if buffered is not None:
            self._outrun(buffered)
            return 0.0
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
        if len(self.queues) == 1 and self._hot:
            self._need_fetch = self._wait_and_fetch(timeout)
            return 0.0
        woken = self.queues[0].wait_for_work(self.id, timeout, self.queues[1:])
        # A plain poll timeout needs no fetch: ready work comes with a wake-up marker, and
        # `wait_for_work` also answers True for a ready job whose marker was lost (and for
        # queues it cannot wait on, which are polled instead).
        self._need_fetch = woken or (self._due_at is not None and time.monotonic() >= self._due_at)
        return 0.0

    def _wait_and_fetch(self, timeout: float) -> bool:
        """An idle pool of one queue: wait for work and fetch it in the same round trip.

        Only while jobs keep coming (`_hot`): the fetch runs when the wait ends, work or
        not, and a fetch is a script of several commands. A wait that times out with
        nothing turns the pool cold: its next waits are a bare BLPOP (one command per
        ``poll_interval``), and the fetch follows a wake-up.

        Returns whether to fetch again at once (the fetch filled every free slot).
        """
        queue = self.queues[0]
        with self._lock:
            free = self._free_slots()
            if not self._accepting or free <= 0:
                return True
            # stop() waits for what this fetch leases, as for any other (see stop).
            self._fetch_until = time.monotonic() + timeout + self._fetch_wait
        try:
            self._want, self._taken, self._round_due, self._round_more = free, 0, None, False
            count, request = self.plan(queue)
            assert request is not None  # free > 0: a fresh request, or the unanswered one
            woken, fetched = queue.wait_and_fetch(
                self.id, timeout, count, self.config.lease, request
            )
            self.answered(queue, fetched)
            self._due_at, self._backlog = self._round_due, self._round_more
        finally:
            with self._lock:
                self._fetch_until = None
                self._slot_free.notify_all()  # stop() may be waiting for this fetch
        # A marker with nothing behind it (a fetch took its job first) keeps it hot.
        self._hot = self._taken > 0 or woken
        return self._taken >= free

    def _wait_for_room(self) -> dict[str, tuple[WorkerQueue, int]] | None:
        """Wait until a fetch is due; None then (or when the pool stops accepting).

        While fetched jobs wait in the buffer, return every `PEEK_INTERVAL` instead, with
        the lowest priority buffered per queue, for `_outrun`. (The lock is held.)
        """
        ride = self._prefetch() > 0
        while self._accepting and not self._should_fetch():
            if ride:
                # Short jobs: room for the next fetch is likely to come within RIDE_WAIT,
                # and the outcomes of that time with it.
                ride = False
                self._outbox.hold()
                self._slot_free.wait(RIDE_WAIT)
                continue
            # The claim on the outbox stays, for the outcome of the slot that ends this
            # wait (it rides along with the fetch it wakes); what already rides goes to
            # the writer now, not after the jobs still running.
            self._outbox.hand_over()
            if not self._queued:
                self._slot_free.wait()
            elif (left := self._peeked_at + PEEK_INTERVAL - time.monotonic()) > 0:
                self._slot_free.wait(left)
            else:
                self._peeked_at = time.monotonic()
                lowest: dict[str, tuple[WorkerQueue, int]] = {}
                for attempt in self._queued:
                    known = lowest.get(attempt.queue.name)
                    if known is None or attempt.priority < known[1]:
                        lowest[attempt.queue.name] = (attempt.queue, attempt.priority)
                return lowest
        return None

    def _outrun(self, lowest: dict[str, tuple[WorkerQueue, int]]) -> None:
        """Hand back buffered jobs that a better ready job outranks, and fetch it instead.

        Buffered jobs wait for a slot here, out of the queue's sight: a job of higher
        priority enqueued since they were fetched must not wait behind them. While jobs
        wait in the buffer, the fetcher looks at each queue's best ready job every
        `PEEK_INTERVAL` (one ZRANGE), and those it outranks go back to the front of
        their priority, their attempt not counted, so that the next fetch takes the
        better job first (and them after it).
        """
        for queue, low in lowest.values():
            try:
                best = queue.best_ready_priority()
            except JobsError:
                continue  # the fetch that follows meets the same error, and reports it
            if best is None or best <= low:
                continue
            with self._lock:
                outranked = [a for a in self._queued if a.queue is queue and a.priority < best]
                for attempt in outranked:
                    self._queued.remove(attempt)
                    attempt.state = State.DONE
                    self._release(attempt)
            if outranked:
                logger.debug(
                    "%d buffered jobs handed back to queue %r: a job of priority %d is ready",
                    len(outranked),
                    queue.name,
                    best,
                    extra=self._extra,
                )
                self._hand_back(outranked)
                self._need_fetch = True

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
        self._want, self._taken, self._round_due, self._round_more = free, 0, None, False
        again = False
        if len(self.queues) == 1:
            again = self._pipelined(self.queues[0])
        else:
            self._outbox.send(self._outbox.claim(), self._order(), self)
        # Set once the round is over: slots read the backlog (the capacity) meanwhile.
        self._due_at, self._backlog = self._round_due, self._round_more
        return max(free, self._taken) if again else self._taken

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

    def _pipelined(self, queue: WorkerQueue) -> bool:
        """Exchanges with a pool's one queue, each sent before the last one's jobs are taken.

        While the queue has a backlog and the answer leaves room for another fetch, the
        next exchange (the outcomes decided meanwhile, and that fetch) goes before this
        one's jobs are decoded and queued for the slots: Redis runs it meanwhile, where
        it would otherwise wait for the fetcher and the fetcher for it. (A short-job
        drain spent about half the fetcher's time waiting for replies.) At most one
        exchange is unanswered at a time, as without this, and none once this returns.
        """
        if self._want > 1 and self._prefetch() > 0 and 4 * self._want >= 3 * self._capacity():
            # Short jobs, a backlog, and slots that ran (nearly) dry waiting for this fetch:
            # two exchanges in flight from now on, each for half the room.
            self._want = (self._want + 1) // 2
        planned = self._want
        answer: Callable[[], Fetched | None] | None = self._outbox.begin(
            self._outbox.claim(), queue, self, ahead=False
        )
        again = False
        try:
            while answer is not None:
                waiting, answer = answer, None
                fetched = waiting()
                self._unanswered = None
                # A full answer from a queue with more: the next fetch is due at once.
                again = fetched is not None and fetched.more and len(fetched.jobs) >= planned
                try:
                    if again and fetched is not None and self._room_after(fetched):
                        planned = self._want - self._taken
                        answer = self._outbox.begin(self._outbox.claim(), queue, self, ahead=True)
                finally:  # (if the next one could not be sent, these are still taken)
                    self._took(queue, fetched)
        finally:
            if answer is not None:  # `_took` failed: the exchange sent after it is still due
                self._took(queue, answer())
                self._unanswered = None
        return again

    def _room_after(self, fetched: Fetched) -> bool:
        """Whether another fetch is due once ``fetched``'s jobs are queued; plans it if so."""
        with self._lock:
            if not self._accepting:
                return False
            room = self._free_slots() - len(fetched.jobs)
            if room <= 0 or room < self._capacity() // 2:
                return False
            self._want = self._taken + room  # (``fetched`` is not taken yet: `plan`)
            # stop() waits for this fetch too (see `_fetch_step`).
            self._fetch_until = time.monotonic() + self._fetch_wait
            return True

    def answered(self, queue: WorkerQueue, fetched: Fetched | None) -> None:
        """A fetch from ``queue`` was answered: queue its jobs for the slots."""
        self._unanswered = None
        self._took(queue, fetched)

    def _took(self, queue: WorkerQueue, fetched: Fetched | None) -> None:
        """Queue a fetch's jobs for the slots, and note what its answer says of the queue."""
        if fetched is None:
            return
        self._round_more = self._round_more or fetched.more
        self._hot = self._hot or bool(fetched.jobs)
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
                    self._buffer(attempt)
                self._work.notify(len(attempts))
        if stopping:
            # stop() began while this fetch was in flight, and has handed back what was
            # queued already: these go back now (stop() waits for this fetch to end).
            for attempt in attempts:
                attempt.state = State.DONE
            self._hand_back(attempts)
            return len(attempts)
        if was_idle and attempts:
            # A job came to an idle pool: let the slot just woken for it take the GIL and
            # start it now, before this thread goes on to its next wait.
            time.sleep(0)
            # The heartbeat slept at the idle pace; held jobs need the busy one (leases,
            # and cancellation reaching running handlers within a second).
            self._heartbeat.loop.nudge()
        return len(attempts)
