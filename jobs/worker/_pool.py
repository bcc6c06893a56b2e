"""`WorkerPool`: fetches leased jobs and runs them on a thread pool.

Threads of one pool:

- ``jobs-worker-N`` (`jobs.worker._slots`): ``num_workers`` slot loops on a
  `ThreadPoolExecutor`, each taking fetched jobs from a local deque (no executor
  submission per job);
- ``jobs-fetcher`` (`jobs.worker._fetcher`): leases as many jobs as there are free
  slots in one call, and when the queue is empty blocks in
  `WorkerQueue.wait_for_work` (so a new job starts at once and an idle pool asks
  about twice per ``poll_interval``: the blocking wait, and a check for a ready job
  whose wake-up was lost);
- ``jobs-writer`` (`jobs.worker._outbox`): writes outcomes in batches;
- ``jobs-heartbeat`` (`jobs.worker._heartbeat`): extends leases, notices cancellations and
  lost leases, reaps dead workers' jobs;
- ``jobs-timeouts`` (`jobs.worker._watchdog`): cancels attempts that pass their timeout;
- ``jobs-hooks`` (`jobs.worker._reports`): success and error hooks, when configured.

The pool sees its queues only through `jobs.worker.WorkerQueue`.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from jobs._loops import Loop
from jobs.context import CancelReason
from jobs.worker._attempt import State
from jobs.worker._core import logger
from jobs.worker._events import Guarded
from jobs.worker._fetcher import Fetching
from jobs.worker._heartbeat import Heartbeat
from jobs.worker._outbox import HookRunner, Outbox
from jobs.worker._reports import Reports
from jobs.worker._slots import Slots
from jobs.worker._watchdog import Watchdog

if TYPE_CHECKING:
    from jobs.client import Client
    from jobs.config import WorkerPoolConfig
    from jobs.registry import Registry
    from jobs.worker._protocol import WorkerQueue

#: How long `WorkerPool.stop` lets queued success/error hooks run before it returns.
HOOKS_GRACE = 5.0

#: Threads that abandoned handlers may hold on to beyond ``num_workers`` (a safety bound
#: against a handler that hangs forever on every job, not a capacity limit).
MAX_STUCK_HANDLERS = 10_000


class WorkerPool(Fetching, Slots, Reports):
    """Runs the jobs of one or several queues with ``config.num_workers`` threads.

    Built and driven by `Client.start` / `Client.stop`; usable on its own for tests.
    ``queue`` is the client's queue (any `WorkerQueue`: a `RedisQueue`, or a
    `jobs.testing.MemoryQueue`); ``config.queues`` may name others in its store.
    ``client`` is the one handlers enqueue follow-up jobs with (`JobContext.enqueue`).
    """

    def __init__(
        self,
        queue: WorkerQueue,
        registry: Registry,
        config: WorkerPoolConfig,
        client: Client | None = None,
    ) -> None:
        self.queue = queue
        self.client = client
        # With weights, when the queues are weighted (else strict order).
        self.queues, self._weights = _served_queues(queue, config, registry)
        self.registry = registry
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease_s = config.lease.total_seconds()
        self._extra = {"queue": self.queues[0].name}
        self._init_state()
        self._init_fetching()
        self._executor = None

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
        self._events = None if config.events is None else Guarded(config.events, logger)

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
            # A fetch still in flight (the queue slow or stalled) can yet lease jobs to this
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
            except Exception:  # the queue down at exit: the record expires on its own
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

    @property
    def in_flight(self) -> int:
        """Jobs this pool holds right now: waiting for a slot, running, or being written."""
        with self._lock:
            return len(self._held)


def served_names(own: str, config: WorkerPoolConfig, registry: Registry) -> list[tuple[str, int]]:
    """The queues a pool of queue ``own`` serves, by name, with their weights (0: strict order).

    Those ``config.queues`` names, in their order; else ``own`` and the queues the
    registry's job types are declared on (`Registry.register`'s ``queue``), with equal
    shares: a busy queue does not starve a type declared elsewhere.
    """
    if config.queues:
        return list(config.queues)
    declared = registry.queues(besides=own)
    return [(name, 1 if declared else 0) for name in (own, *declared)]


def _served_queues(
    queue: WorkerQueue, config: WorkerPoolConfig, registry: Registry
) -> tuple[list[WorkerQueue], list[int] | None]:
    """The queues to serve (`served_names`), and their weights (None: strict order)."""
    names = served_names(queue.name, config, registry)
    served = [queue if name == queue.name else queue.sibling(name) for name, _ in names]
    weights = [weight for _, weight in names]
    return served, weights if any(weights) else None
