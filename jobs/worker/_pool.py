"""`WorkerPool`: fetches leased jobs and runs them on a thread pool.

Threads of one pool:

- ``jobs-worker-N``: ``num_workers`` slot loops on a `ThreadPoolExecutor`, each taking
  fetched jobs from a local deque (no executor submission per job);
- ``jobs-fetcher``: leases as many jobs as there are free slots in one call, and when
  the queue is empty blocks on the queue's wake-up list (so a new job starts at once
  and an idle pool sends about two commands per ``poll_interval``: the blocking wait,
  and a check for a ready job whose wake-up was lost);
- ``jobs-writer`` (`jobs.worker._outbox`): writes outcomes in batches;
- ``jobs-heartbeat`` (`jobs.worker._heartbeat`): extends leases, notices cancellations and
  lost leases, reaps dead workers' jobs;
- ``jobs-timeouts`` (`jobs.worker._watchdog`): cancels attempts that pass their timeout;
- ``jobs-hooks``: success and error hooks, when configured.

An attempt that is timed out, cancelled or loses its lease is *abandoned*: its token is
cancelled, its outcome decided without waiting, and its slot handed to a fresh loop at
once; when its handler finally returns, the result is dropped (and would be refused by
the lease fence anyway).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import attrs
import redis
import redis.cluster

from jobs import _codec
from jobs._loops import Loop
from jobs.context import CancelReason
from jobs.errors import JobTimeout
from jobs.queue._wire import Fetched, HeldJob, socket_timeout
from jobs.queue._wire import Outcome as Written
from jobs.queue.redis_queue import RedisQueue, new_request_id
from jobs.worker import _attempt
from jobs.worker._attempt import Attempt, Completed, Outcome, State
from jobs.worker._heartbeat import Heartbeat
from jobs.worker._outbox import REDIS_ERRORS, HookRunner, Outbox, Pending, split
from jobs.worker._watchdog import Watchdog

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs.client import Client
    from jobs.config import WorkerPoolConfig
    from jobs.registry import Registry

logger = logging.getLogger("jobs.worker")

#: How long `WorkerPool.stop` lets queued success/error hooks run before it returns.
HOOKS_GRACE = 5.0

#: Threads that abandoned handlers may hold on to beyond ``num_workers`` (a safety bound
#: against a handler that hangs forever on every job, not a capacity limit).
MAX_STUCK_HANDLERS = 10_000

#: A job that waited longer than this for a thread, since its lease was last confirmed,
#: has its lease checked before it starts: a job cancelled while it waited never starts.
#: One round trip, small next to such a wait; a job that a free thread takes at once
#: (prefetch 0, or a pool that keeps up) starts without it.
CONFIRM_AFTER = 0.02

#: Blocking waits stay this far below the client's socket timeout (redis-py 8 defaults to
#: 5 s and would otherwise fail a long BLPOP with a TimeoutError).
SOCKET_TIMEOUT_MARGIN = 0.5


class WorkerPool:
    """Runs the jobs of one or several queues with ``config.num_workers`` threads.

    Built and driven by `Client.start` / `Client.stop`; usable on its own for tests.
    ``queue`` is the client's queue; ``config.queues`` may name others on its Redis.
    ``client`` is the one handlers enqueue follow-up jobs with (`JobContext.enqueue`).
    """

    def __init__(
        self,
        queue: RedisQueue,
        registry: Registry,
        config: WorkerPoolConfig,
        client: Client | None = None,
    ) -> None:
        self.queue = queue
        self.client = client
        self.queues = _served_queues(queue, config)
        # Weights, when the queues are weighted (else strict order).
        self._weights = [w for _, w in config.queues] if any(w for _, w in config.queues) else None
        self.registry = registry
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease_s = config.lease.total_seconds()
        self._extra: dict[str, object] = {"queue": self.queues[0].name}

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
        self._executor: ThreadPoolExecutor | None = None

        # The job types' rate limits and caps, published before the first fetch (not by
        # the first heartbeat, which may come after it: that fetch would ignore them).
        self._limits_unpublished = registry.limits()
        self._need_fetch = True
        self._due_at: float | None = None  # monotonic time the earliest scheduled job is due
        # A fetch that may have leased jobs though its reply never came: its queue and
        # request id, sent again until answered (fetch.lua then returns those jobs).
        self._unanswered: tuple[RedisQueue, str] | None = None
        # The queues whose wake-up lists one BLPOP can wait on (all, off a cluster).
        self._blockable = _same_slot(self.queues)
        cap = socket_timeout(queue.client)
        self._block_cap = float("inf") if cap is None else max(cap - SOCKET_TIMEOUT_MARGIN, 0.05)
        # How long stop() waits for a fetch in flight: its reply comes within the socket
        # timeout or never, and past a lease what it leased would be re-delivered anyway.
        self._fetch_wait = max(self._lease_s, cap or 0.0)
        self._fetch_until: float | None = None  # monotonic; set while a fetch is in flight

        self._fetcher = Loop(
            "jobs-fetcher", self._fetch_step, logger, wake=self._wake_fetcher, extra=self._extra
        )
        self._heartbeat = Heartbeat(
            self.queues,
            self.id,
            config.num_workers,
            config.lease,
            self._held_now,
            self._abandon,
            logger,
            registry.declarations(),
        )
        self._watchdog = Watchdog(self._running, self._lock, self._on_timeout, logger)
        self._outbox = Outbox(self.queues[0].name, self._on_written, self._on_dropped, logger)
        has_hooks = config.success_handler is not None or config.error_handler is not None
        self._hooks = HookRunner(logger) if has_hooks else None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread; returns at once."""
        n = self.config.num_workers
        # Every abandoned handler that ignores its token keeps its thread, and its slot gets
        # a new one: the executor only creates threads when none is idle, so this bound is
        # never a reserve, just "no bound" for ThreadPoolExecutor.
        self._executor = ThreadPoolExecutor(
            max_workers=n + MAX_STUCK_HANDLERS, thread_name_prefix="jobs-worker"
        )
        with self._lock:
            self._accepting = self._slots_open = True
        for _ in range(n):
            self._executor.submit(self._slot)
        loops = [self._outbox.loop, self._watchdog.loop, self._heartbeat.loop, self._fetcher]
        if self._hooks is not None:
            loops.append(self._hooks.loop)
        for loop in loops:
            loop.start()
        logger.info(
            "worker pool %s started: %d workers on queue%s %s at %s",
            self.id,
            n,
            "s" if len(self.queues) > 1 else "",
            ", ".join(repr(q.name) for q in self.queues),
            self.queue.address,
            extra=self._extra,
        )

    def stop(self, shutdown_timeout: float | None = None) -> None:
        """Stop gracefully: see `Client.stop`.

        Args:
            shutdown_timeout: seconds to wait for running jobs, instead of the configured
                ``shutdown_timeout``.
        """
        wait = self.config.shutdown_timeout.total_seconds()
        with self._lock:
            if not self._accepting and not self._slots_open:
                return
            self._accepting = False
            self._stop_deadline = min(
                self._stop_deadline,
                time.monotonic() + (wait if shutdown_timeout is None else shutdown_timeout),
            )
            self._slot_free.notify_all()
        self._fetcher.stop(timeout=self.config.poll_interval.total_seconds() + 5)
        with self._lock:
            # A fetch still in flight (Redis slow or stalled) can yet lease jobs to this
            # pool: `_take` hands them back when its reply comes. Wait for that while the
            # reply can still come, else those jobs would wait a lease in `processing`.
            while (until := self._fetch_until) is not None and until > time.monotonic():
                self._slot_free.wait(until - time.monotonic())
        self._outbox.release()  # the writer takes over whatever the fetcher had claimed
        if not self._fetcher.is_alive():
            self._collect_unanswered()

        with self._lock:
            not_started = list(self._queued)
            self._queued.clear()
            for attempt in not_started:
                attempt.state = State.DONE
                self._release(attempt)
        self._hand_back(not_started)

        with self._lock:
            while self._running and (left := self._stop_deadline - time.monotonic()) > 0:
                self._slot_free.wait(left)
            interrupted = list(self._running)
            for attempt in interrupted:
                self._running.discard(attempt)
                attempt.state = State.ABANDONED
                self._stuck += 1
                self._held.pop(attempt.key, None)
            self._interrupted.update(interrupted)
            self._grace_deadline = min(
                self._grace_deadline,
                time.monotonic() + self.config.shutdown_grace.total_seconds(),
            )
            self._slots_open = False
            self._work.notify_all()
        for attempt in interrupted:
            attempt.token.cancel(CancelReason.SHUTDOWN)
        self._hand_back(interrupted)
        self._await_interrupted()

        # Outcomes still being written keep their leases alive through the heartbeat.
        self._outbox.drain(self._lease_s)
        self._outbox.loop.stop(timeout=5)
        self._watchdog.loop.stop(timeout=5)
        self._heartbeat.loop.stop(timeout=5)
        if self._hooks is not None:
            self._hooks.finish(HOOKS_GRACE)
        for served in self.queues:
            try:
                served.forget_pool(self.id)
            except Exception:  # Redis down at exit: the record expires on its own
                logger.debug("could not remove pool record %s", self.id, exc_info=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        logger.info(
            "worker pool %s stopped (%d not started and %d interrupted jobs returned to the queue)",
            self.id,
            len(not_started),
            len(interrupted),
            extra=self._extra,
        )

    def hurry(self, shutdown_timeout: float = 0.0) -> None:
        """Make a `stop` in progress (in another thread) wait at most this much longer.

        For a second Ctrl-C: running jobs are cancelled and returned to the queue now,
        and the grace for cancelled handlers is cut to the same bound.
        """
        with self._lock:
            until = time.monotonic() + shutdown_timeout
            self._stop_deadline = min(self._stop_deadline, until)
            self._grace_deadline = min(self._grace_deadline, until)
            self._slot_free.notify_all()

    def _await_interrupted(self) -> None:
        """Wait, up to the grace, until the handlers `stop` cancelled have returned.

        A service tears down what its handlers use once ``stop()`` returns; a handler
        still running its cleanup then would race that teardown.
        """
        with self._lock:
            while self._interrupted and (left := self._grace_deadline - time.monotonic()) > 0:
                self._slot_free.wait(left)
            still = len(self._interrupted)
            self._interrupted.clear()
        if still:
            logger.warning(
                "%d handler(s) cancelled at shutdown still running after the %g s grace "
                "(ignoring ctx.cancelled?); stop() returns without them",
                still,
                self.config.shutdown_grace.total_seconds(),
                extra=self._extra,
            )

    def _returned(self, attempt: Attempt) -> None:
        """An abandoned attempt's handler returned (the lock is held)."""
        if attempt in self._interrupted:
            self._interrupted.discard(attempt)
            self._slot_free.notify_all()  # stop() may be waiting for it

    @property
    def in_flight(self) -> int:
        """Jobs this pool holds right now: waiting for a slot, running, or being written."""
        with self._lock:
            return len(self._held)

    # -- slots -----------------------------------------------------------------------

    def _capacity(self) -> int:
        return self.config.num_workers + self.config.prefetch

    def _free_slots(self) -> int:
        return self._capacity() - len(self._running) - len(self._queued)

    def _should_fetch(self) -> bool:
        """Whether the fetcher should fetch now (the lock is held)."""
        free = self._free_slots()
        # Refill in batches (half the capacity at a time) unless a slot is left waiting.
        return free > 0 and (not self._queued or free >= self._capacity() // 2)

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
                outcome = self._run(attempt)
                with self._lock:
                    if attempt.state is State.ABANDONED:
                        self._stuck -= 1  # this thread leaves; its replacement already runs
                        self._returned(attempt)
                        logger.debug(
                            "late outcome of an abandoned attempt discarded",
                            extra=attempt.log_extra(),
                        )
                        return
                    attempt.state = State.FINISHED
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
                    self._outbox.put(attempt, outcome, fetch_soon=fetch_soon)
            except BaseException as exc:
                self._slot_failed(attempt, exc)

    def _run(self, attempt: Attempt) -> Outcome:
        """The attempt's outcome; an error around its handler (a bug) fails it too."""
        try:
            return _attempt.run(attempt, self.registry, self.client)
        except BaseException as exc:
            logger.error(
                "job %s: unexpected error around its handler, attempt failed: %s",
                attempt.held.job_id,
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
        level = logging.INFO if reason is CancelReason.CANCELLED else logging.WARNING
        logger.log(
            level,
            "job %s: %s while it waited for a thread; not started",
            attempt.held.job_id,
            reason,
            extra=attempt.log_extra(),
        )
        return False

    def _release(self, attempt: Attempt) -> None:
        """Stop holding an attempt's lease: nothing more to write for it (the lock is held)."""
        if self._held.get(attempt.key) is attempt:
            del self._held[attempt.key]

    def _held_now(self) -> list[Attempt]:
        with self._lock:
            return list(self._held.values())

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
        level = logging.INFO if reason is CancelReason.CANCELLED else logging.WARNING
        logger.log(
            level,
            "job %s: %s, handler told to stop",
            attempt.held.job_id,
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
            self._abandon_running(attempt)
            self._outbox.put(attempt, outcome)
        attempt.token.cancel(CancelReason.TIMEOUT)

    # -- fetching --------------------------------------------------------------------

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
        woken = self.queues[0].wait_for_work(
            self.id, min(timeout, self._block_cap), self._blockable[1:]
        )
        # A plain poll timeout needs no fetch: ready work comes with a wake-up marker, and
        # `wait_for_work` also answers True for a ready job whose marker was lost. Queues
        # that cannot share the blocking wait (other cluster slots) are polled instead.
        self._need_fetch = (
            woken
            or len(self._blockable) < len(self.queues)
            or (self._due_at is not None and time.monotonic() >= self._due_at)
        )
        return 0.0

    def _fetch(self, free: int) -> int:
        try:
            return self._exchange(free)
        finally:
            with self._lock:
                self._fetch_until = None
                self._slot_free.notify_all()  # stop() may be waiting for this fetch

    def _order(self) -> list[RedisQueue]:
        """The queues in the order to fetch from this time."""
        if self._weights is None:
            return self.queues
        # A weighted random order (Efraimidis-Spirakis): each queue comes first as often
        # as its share of the weights, and none is ever starved.
        keys = [random.random() ** (1 / w) for w in self._weights]
        return [q for _, q in sorted(zip(keys, self.queues, strict=True), key=lambda kq: -kq[0])]

    def _exchange(self, free: int) -> int:
        """Write what the outbox holds and fetch up to ``free`` jobs.

        One round trip per queue visited: the first queue in `_order` gets the fetch and
        the outcomes of its jobs; later queues are asked only for what is still free.
        """
        if self._limits_unpublished:
            for queue in self.queues:
                queue.publish_limits(self._limits_unpublished)
            self._limits_unpublished = {}
        batch = self._outbox.claim()
        by_queue: dict[str, list[Pending]] = {}
        for pending in batch:
            by_queue.setdefault(pending.attempt.queue.name, []).append(pending)
        taken = 0
        due_at: float | None = None
        order = self._order()
        if self._unanswered is not None:
            # Its queue first, so that the slots it was sent for are still free.
            order = [self._unanswered[0], *(q for q in order if q is not self._unanswered[0])]
        for index, queue in enumerate(order):
            mine = by_queue.pop(queue.name, [])
            want = free - taken
            if want <= 0 and not mine:
                continue
            completions, failures, ordered = split(mine)
            request = None
            if self._unanswered is not None and self._unanswered[0] is queue:
                request = self._unanswered[1]
            elif want > 0:
                request = new_request_id()
            if request is not None:
                # Until this call is answered, a retry is the same fetch, not another one.
                self._unanswered = (queue, request)
            while True:
                try:
                    done, failed, fetched = queue.exchange(
                        completions, failures, max(want, 0), self.config.lease, request=request
                    )
                    break
                except BaseException as exc:
                    if ordered and not isinstance(exc, REDIS_ERRORS):
                        # Not Redis: an outcome that does not encode, refused before
                        # anything was sent. Write them apart, then fetch alone (the
                        # same request: nothing of it reached Redis).
                        self._outbox.write_apart(ordered, exc)
                        completions, failures, ordered = [], [], []
                        continue
                    rest = [p for q in order[index + 1 :] for p in by_queue.get(q.name, [])]
                    self._outbox.failed(ordered + rest)
                    raise
            if request is not None:
                self._unanswered = None
            if fetched is not None:
                taken += self._take(queue, fetched)
                if fetched.next_due_ms is not None:
                    due = time.monotonic() + (fetched.next_due_ms - fetched.now_ms) / 1000
                    due_at = due if due_at is None else min(due_at, due)
            self._outbox.written(ordered, done + failed)
        self._due_at = due_at
        return taken

    def _collect_unanswered(self) -> None:
        """At stop: hand back what an unanswered fetch may have leased (else it waits a lease)."""
        if self._unanswered is None:
            return
        queue, request = self._unanswered
        self._unanswered = None
        try:
            fetched = queue.fetch(0, self.config.lease, request=request)
            queue.requeue([HeldJob(j.job_id, j.token) for j in fetched.jobs])
        except Exception as exc:
            logger.warning(
                "could not collect the jobs of an unanswered fetch from queue %r (%s); "
                "they come back when their leases expire",
                queue.name,
                exc,
                extra=self._extra,
            )

    def _take(self, queue: RedisQueue, fetched: Fetched) -> int:
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

    # -- outcomes --------------------------------------------------------------------

    def _hand_back(self, attempts: list[Attempt]) -> None:
        """Return held jobs to their queues, retrying while their leases last."""
        for queue in self.queues:
            mine = [a for a in attempts if a.queue is queue]
            if mine:
                self._requeue(queue, mine)

    def _requeue(self, queue: RedisQueue, attempts: list[Attempt]) -> None:
        deadline = max(a.lease_until for a in attempts)
        failures = 0
        while True:
            try:
                queue.requeue([a.held for a in attempts])
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
                # Only stop() gets here, with nothing else to do until Redis answers.
                time.sleep(min(0.1 * failures, 1.0))

    def _on_dropped(self, attempt: Attempt, why: str) -> None:
        with self._lock:
            self._finish(attempt)
        logger.warning(
            "job %s: outcome not written, %s; it will be re-delivered",
            attempt.held.job_id,
            why,
            extra=attempt.log_extra(),
        )

    def _finish(self, attempt: Attempt) -> None:
        """Its outcome is written (or given up on) (the lock is held)."""
        if attempt.state is State.FINISHED:
            attempt.state = State.DONE
        # An abandoned attempt stays ABANDONED: its slot thread checks that on return.
        self._release(attempt)

    def _on_written(self, batch: Sequence[Pending], replies: Sequence[Written]) -> None:
        with self._lock:
            for pending in batch:
                self._finish(pending.attempt)
        quiet = not logger.isEnabledFor(logging.DEBUG) and self._hooks is None
        for pending, written in zip(batch, replies, strict=True):
            if quiet and written.recorded and isinstance(pending.outcome, Completed):
                continue  # the common case, with nothing to log or call
            try:
                self._report(pending.attempt, pending.outcome, written)
            except BaseException:  # its outcome is written; the other reports must still run
                logger.exception(
                    "job %s: reporting its outcome failed",
                    pending.attempt.held.job_id,
                    extra=pending.attempt.log_extra(),
                )

    def _report(self, attempt: Attempt, outcome: Outcome, written: Written) -> None:
        """Log one written outcome and queue its hook."""
        extra = attempt.log_extra()
        if attempt.started:
            extra["duration_ms"] = round((time.monotonic() - attempt.started) * 1000, 1)
        if not written.recorded:
            logger.warning(
                "job %s: outcome rejected, this worker no longer holds the lease "
                "(the job was cancelled, or re-delivered after this worker stalled)",
                attempt.held.job_id,
                extra=extra,
            )
            return
        if isinstance(outcome, Completed):
            logger.debug("job %s completed", attempt.held.job_id, extra=extra)
            hook = self.config.success_handler
            if hook is not None and self._hooks is not None and attempt.job is not None:
                job = _attempt.recorded_job(attempt, outcome, "completed", written.now_ms, 0)
                self._hooks.call(lambda: hook(job))
            return
        if written.status == "failed":
            # %r: the error is a handler's text, and a control character or line break
            # in it would act on a terminal or forge a log line under any formatter.
            logger.error(
                "job %s failed for good: %r",
                attempt.held.job_id,
                outcome.failure.error,
                exc_info=outcome.exc,
                extra=extra,
            )
        else:
            logger.warning(
                "job %s attempt %d failed, will retry: %r",
                attempt.held.job_id,
                attempt.number,
                outcome.failure.error,
                extra=extra,
            )
        error_hook = self.config.error_handler
        if error_hook is not None and self._hooks is not None and attempt.job is not None:
            job = _attempt.recorded_job(
                attempt, outcome, written.status, written.now_ms, written.run_at_ms
            )
            exc = outcome.exc
            self._hooks.call(lambda: error_hook(job, exc))


def _served_queues(queue: RedisQueue, config: WorkerPoolConfig) -> list[RedisQueue]:
    """The client's queue, or the queues ``config.queues`` names, in their order."""
    if not config.queues:
        return [queue]
    return [
        queue if name == queue.name else RedisQueue(attrs.evolve(queue.config, name=name))
        for name, _ in config.queues
    ]


def _same_slot(queues: list[RedisQueue]) -> list[RedisQueue]:
    """The first queue and those one BLPOP can watch with it (same node: all, off a cluster)."""
    if not isinstance(queues[0].client, redis.cluster.RedisCluster):
        return queues
    return [q for q in queues if q.keys.base == queues[0].keys.base]
