"""`PoolCore`: the state every part of a `WorkerPool` shares, and the moves they share.

The pool is assembled from one part per responsibility, as `RedisQueue` is: `Fetching`
(``_fetcher``: leasing jobs), `Slots` (``_slots``: running them, abandoning them),
`Reports` (``_reports``: logging written outcomes and queueing hooks) and the lifecycle
(``_pool``: start, stop). All of them work on this state under its one lock.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from jobs.client import Client
    from jobs.config import WorkerPoolConfig
    from jobs.registry import Registry
    from jobs.worker._attempt import Attempt
    from jobs.worker._events import Guarded
    from jobs.worker._heartbeat import Heartbeat
    from jobs.worker._outbox import HookRunner, Outbox
    from jobs.worker._protocol import WorkerQueue
    from jobs.worker._watchdog import Watchdog

logger = logging.getLogger("jobs.worker")

#: With ``prefetch=None`` (automatic), a pool fetches ahead only while its jobs take less
#: than this on average (seconds): then a round trip per job is a large share of each
#: job, and a job waiting in the buffer waits little. Longer jobs are better left in the
#: queue, where any idle pool can take them.
SHORT_JOB = 0.05
#: Weight of the latest job in the running mean of job durations.
DURATION_WEIGHT = 0.2
#: Automatic prefetch holds this many jobs per thread: the larger the fetches, the less
#: per-call work in Redis and in the pool per job (measured with 8 threads, 4 against 2:
#: +12% jobs/s on the benchmark's INCR drain, +15% on the empty body, +18% with 2
#: processes). 8 since a pool that runs dry keeps two exchanges in flight, each for half
#: the room (`Fetching._pipelined`): so each still carries as many jobs as with 4
#: (with 4, two processes drained the empty body 6-19% slower with the exchanges in
#: flight than without; with 8, as fast or faster, in alternated quick benchmark runs;
#: the INCR drain +8-31% over 4, for +0.4-0.5 MB of worker RSS). A buffered short job
#: (under `SHORT_JOB` on average) still waits at most eight jobs' time for a thread, and
#: no longer than `BUFFER_WAIT`, about.
PREFETCH_PER_THREAD = 8
#: ... up to this many in all. Past fetches of a few dozen jobs Redis saves little more per
#: job (fetch.lua: 12.6 us a job in fetches of 20, 11.9 in fetches of 40), while the
#: fetcher decodes each reply in one stretch holding the GIL, and more jobs wait in the
#: buffer. Measured: 32 threads drained the benchmark's INCR body 15% slower with 128
#: buffered than with 64.
PREFETCH_MOST = 64
#: A job that waited longer than this for a thread, since its lease was last confirmed,
#: has its lease checked before it starts (`Slots._slot`): a job cancelled while it
#: waited never starts. One round trip, small next to such a wait; a job that a free
#: thread takes sooner (prefetch 0, or a pool that keeps up) starts without it, and a
#: cancellation reaches it through its token at the next heartbeat, as for any running job.
CONFIRM_AFTER = 0.05
#: Automatic prefetch holds no more jobs than the threads get through in this long (half
#: of `CONFIRM_AFTER`), so that the last one buffered still starts without that round
#: trip. A fixed count suits one machine only: on a 2-core VM where 8 threads ran the
#: benchmark's INCR body at ~2,300 jobs/s, 64 buffered jobs waited ~28 ms, over the 20 ms
#: this check then waited for, so that half the jobs paid a round trip of their own
#: before they started: the drain ran at 1,430-1,680 jobs/s, 2,240-2,320 with the check
#: off, and 2,570-2,780 with the buffer sized by time (redis-server 150-174, 108 and
#: 82-92 us a job).
BUFFER_WAIT = CONFIRM_AFTER / 2


class PoolCore:
    """What the parts of a pool share: its queues, its attempts, its lock and threads."""

    queue: WorkerQueue
    queues: list[WorkerQueue]
    client: Client | None
    registry: Registry
    config: WorkerPoolConfig
    id: str
    _lease_s: float
    _extra: dict[str, object]
    _executor: ThreadPoolExecutor | None
    _heartbeat: Heartbeat
    _watchdog: Watchdog
    _outbox: Outbox
    _hooks: HookRunner | None
    _events: Guarded | None  # the observer (`WorkerPoolConfig.events`), if any

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)  # the fetcher waits on it
        self._work = threading.Condition(self._lock)  # idle slots wait on it
        self._queued: collections.deque[Attempt] = collections.deque()
        self._running: set[Attempt] = set()
        self._held: dict[tuple[str, str], Attempt] = {}  # every lease this pool holds
        self._stuck = 0  # abandoned handlers that have not returned yet
        self._accepting = False
        self._slots_open = False
        self._stop_deadline = float("inf")  # monotonic; when stop() stops waiting for jobs
        # Attempts stop() cancelled whose handlers have not returned yet, and until when
        # (monotonic) stop() waits for them (`WorkerPoolConfig.shutdown_grace`).
        self._interrupted: set[Attempt] = set()
        self._grace_deadline = float("inf")
        # Running mean of how long handlers take (seconds); None until one has returned.
        self._mean_duration: float | None = None
        # Whether the last fetch left ready jobs in the queue (`Fetched.more`): a backlog.
        # Automatic prefetch fetches ahead only then: a job that comes to an idle queue
        # waits for a free thread in the queue, where any pool can take it.
        self._backlog = False

    # -- capacity (the lock is held) ---------------------------------------------------

    def _capacity(self) -> int:
        return self.config.num_workers + self._prefetch()

    def _prefetch(self) -> int:
        """How many jobs to hold beyond the slots now (`WorkerPoolConfig.prefetch`)."""
        prefetch = self.config.prefetch
        if prefetch is not None:
            return prefetch
        mean = self._mean_duration
        if mean is None or mean >= SHORT_JOB or not self._backlog:
            return 0
        threads = self.config.num_workers
        # The threads free a slot every mean / threads seconds, about.
        in_time = int(BUFFER_WAIT * threads / max(mean, 1e-9))
        return min(PREFETCH_PER_THREAD * threads, PREFETCH_MOST, in_time)

    def _ran_for(self, seconds: float) -> None:
        """A handler returned after ``seconds`` (the lock is held)."""
        mean = self._mean_duration
        self._mean_duration = seconds if mean is None else mean + DURATION_WEIGHT * (seconds - mean)

    def _buffer(self, attempt: Attempt) -> None:
        """Queue a fetched attempt for the slots, ahead of its queue's lower priorities.

        A later fetch can bring a better job than those still waiting here (enqueued
        since): it goes first, as it would have without the buffer. (The lock is held.)
        """
        queued = self._queued
        priority = attempt.priority
        if not queued or queued[-1].priority >= priority:
            queued.append(attempt)  # nearly always: fetches come best first
            return
        for index, waiting in enumerate(queued):
            if waiting.queue is attempt.queue and waiting.priority < priority:
                queued.insert(index, attempt)
                return
        queued.append(attempt)

    def _free_slots(self) -> int:
        return self._capacity() - len(self._running) - len(self._queued)

    def _should_fetch(self) -> bool:
        """Whether the fetcher should fetch now (the lock is held)."""
        free = self._free_slots()
        # Refill in batches (half the capacity at a time) unless a slot is left waiting.
        return free > 0 and (not self._queued or free >= self._capacity() // 2)

    # -- holding leases ----------------------------------------------------------------

    def _release(self, attempt: Attempt) -> None:
        """Stop holding an attempt's lease: nothing more to write for it (the lock is held)."""
        if self._held.get(attempt.key) is attempt:
            del self._held[attempt.key]

    def _held_now(self) -> list[Attempt]:
        with self._lock:
            return list(self._held.values())

    def _hand_back(self, attempts: list[Attempt]) -> None:
        """Return held jobs to their queues, retrying while their leases last."""
        for queue in self.queues:
            mine = [a for a in attempts if a.queue is queue]
            if mine:
                self._requeue(queue, mine)

    def _requeue(self, queue: WorkerQueue, attempts: list[Attempt]) -> None:
        deadline = max(a.lease_until for a in attempts)
        failures = 0
        while True:
            try:
                queue.requeue([a.leased for a in attempts])
                return
            except Exception as exc:
                failures += 1
                if time.monotonic() >= deadline:
                    logger.warning(
                        "could not return %d jobs to queue %r (%s); "
                        "they come back when their leases expire",
                        len(attempts),
                        queue.name,
                        exc,
                        extra=self._extra,
                    )
                    return
                # stop(), or the fetcher handing back outranked jobs: nothing else to do
                # until the queue answers.
                time.sleep(min(0.1 * failures, 1.0))
