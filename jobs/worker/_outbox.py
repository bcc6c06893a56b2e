"""Writing decided attempts to the queue in batches, and running the user's hooks.

Handler threads never wait for the queue: they drop their outcome here and take the next job.
Outcomes leave by one of two doors, always in batches:

- the fetcher *claims* the outbox while the pool is busy: an outcome whose slot woke the
  fetcher to fetch goes in the same pipeline as that fetch, one round trip for both (and
  so does every outcome while the fetcher briefly expects to fetch soon: `hold`);
- the writer thread takes everything else at once: an outcome that wakes no fetch (the
  pool's slots and prefetch are still full enough), and whatever the fetcher leaves when
  it goes to wait (for a slot to free, or for new work).

So no outcome waits for the fetcher's next decision, however long the jobs still
running take.

When the queue is unreachable an outcome is retried for as long as its lease holds
(heartbeats keep extending it once the queue is back); past that it is dropped and the
job is re-delivered by the reaper: at-least-once, never a double record.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

from jobs import _codec
from jobs._loops import Loop
from jobs.errors import JobsError
from jobs.worker import _attempt

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence
    from datetime import timedelta

    from jobs.worker._attempt import Attempt
    from jobs.worker._protocol import Fetched, Outcome, WorkerQueue, Written


class Fetch(Protocol):
    """A fetch that rides along with a write (`Outbox.send`): the fetcher's side."""

    @property
    def lease(self) -> timedelta:
        """The lease to fetch with."""
        ...

    def plan(self, queue: WorkerQueue) -> tuple[int, str | None]:
        """How many jobs to lease from ``queue`` now, and the fetch's request id (None: none)."""
        ...

    def answered(self, queue: WorkerQueue, fetched: Fetched | None) -> None:
        """The call to ``queue`` returned (``fetched``: what the fetch leased, if one was sent)."""
        ...


class Outbox:
    """Outcomes waiting to be written, and the writer thread that writes them.

    It holds attempts whose `Attempt.outcome` is decided; ``on_written(attempts,
    replies)`` and ``on_dropped(attempt, why)`` tell the pool how each one ended.
    """

    def __init__(
        self,
        queue_name: str,
        on_written: Callable[[Sequence[Attempt], Sequence[Written]], None],
        on_dropped: Callable[[Attempt, str], None],
        logger: logging.Logger,
    ) -> None:
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._logger = logger
        self._extra: dict[str, object] = {"queue": queue_name}
        # Two conditions on one lock: the writer thread waits on ``_cv`` for outcomes to
        # write, `drain` on ``_drained`` for the count of those in flight to fall. Apart,
        # a batch written by the fetcher (every round trip of a busy pool) does not wake
        # the idle writer thread only for it to wait again.
        lock = threading.RLock()  # what Condition() makes by itself
        self._cv = threading.Condition(lock)
        self._drained = threading.Condition(lock)
        self._pending: list[Attempt] = []  # for the writer thread
        self._riding: list[Attempt] = []  # for the fetch a slot just woke the fetcher for
        self._writing = 0  # outcomes taken and not yet written or dropped
        self._claimed = False  # the fetcher will take what rides along with its fetch
        # The fetcher expects to fetch soon though no slot woke it yet (`hold`): every
        # outcome rides, until `hand_over`.
        self._holding = False
        self.loop = Loop(
            "jobs-writer", self._step, logger, wake=self._wake, extra={"queue": queue_name}
        )

    def put(self, attempt: Attempt, *, fetch_soon: bool = False) -> None:
        """Queue a decided attempt for writing.

        Args:
            attempt: the attempt, its `Attempt.outcome` set.
            fetch_soon: the fetcher was just woken to fetch (the caller decided that under
                the pool's lock, and puts under it too: see `hand_over`); if it holds the
                claim, the outcome goes with that fetch instead of waking the writer.
        """
        with self._cv:
            if self._claimed and (fetch_soon or self._holding):
                self._riding.append(attempt)
            else:
                self._pending.append(attempt)
                self._cv.notify_all()

    def claim(self) -> list[Attempt]:
        """For the fetcher: take everything now, and hold the claim until `release`."""
        with self._cv:
            self._claimed = True
            batch = self._riding + self._pending
            self._riding, self._pending = [], []
            self._writing += len(batch)
            return batch

    def hold(self) -> None:
        """The fetcher waits a little for a slot, and will fetch soon: outcomes ride.

        Until `hand_over` (or `release`): the outcomes of a busy pool's short jobs then
        go with its next fetch, a batch of them in one script call, rather than each to
        the writer in a call of its own.
        """
        with self._cv:
            self._holding = self._claimed

    def hand_over(self) -> None:
        """The fetcher waits for a slot before fetching again: what rides goes to the writer.

        The claim stays, so that the outcome of the slot that ends this wait rides along
        with the fetch it wakes.
        """
        with self._cv:
            self._give_to_writer()

    def release(self) -> None:
        """The fetcher will not fetch soon: what waits goes to the writer thread."""
        with self._cv:
            self._claimed = False
            self._give_to_writer()

    def _give_to_writer(self) -> None:
        self._holding = False
        if self._riding:
            self._pending += self._riding
            self._riding = []
            self._cv.notify_all()

    def send(
        self,
        batch: Sequence[Attempt],
        order: Sequence[WorkerQueue] = (),
        fetch: Fetch | None = None,
    ) -> None:
        """Write a taken batch, one call per queue, each call also fetching for ``fetch``.

        The one write loop, for the writer thread and for the fetcher. Queues are visited
        in ``order`` (the fetcher's), then those of the batch's other outcomes. A queue
        error (`jobs.JobsError`) hands what is not written yet back to the outbox
        (`failed`) and propagates.
        """
        by_queue: dict[str, list[Attempt]] = {}
        for attempt in batch:
            by_queue.setdefault(attempt.queue.name, []).append(attempt)
        queues = {q.name: q for q in order}
        for group in by_queue.values():
            queues.setdefault(group[0].queue.name, group[0].queue)
        for name, target in queues.items():
            mine = by_queue.pop(name, [])
            count, request = fetch.plan(target) if fetch is not None else (0, None)
            if not mine and request is None:
                continue
            try:
                fetched = self._begin(target, mine, count, request, fetch, ahead=False)()
            except BaseException:  # `_begin` has seen to ``mine``: the rest waits
                self.failed([a for rest in by_queue.values() for a in rest])
                raise
            if fetch is not None and request is not None:
                fetch.answered(target, fetched)

    def begin(
        self, batch: Sequence[Attempt], target: WorkerQueue, fetch: Fetch, *, ahead: bool
    ) -> Callable[[], Fetched | None]:
        """`send` a taken batch to ``target`` with a fetch; the function returned answers it.

        The fetcher's pipelined rounds (`Fetching._pipelined`). ``ahead``: the call is
        only sent here (`WorkerQueue.begin_exchange`), and Redis runs it while the
        fetcher takes the jobs of the one before; else it runs here, as `send` runs it.
        The function reports the batch written (or hands it to `failed` and raises the
        queue's error) and returns what the fetch leased; ``fetch.answered`` is the
        caller's to call. Outcomes of other queues in ``batch`` (none in a one-queue
        pool) are written first, here.
        """
        mine = [a for a in batch if a.queue is target]
        if len(mine) < len(batch):
            self.send([a for a in batch if a.queue is not target])
        count, request = fetch.plan(target)
        return self._begin(target, mine, count, request, fetch, ahead=ahead)

    def _begin(
        self,
        target: WorkerQueue,
        batch: list[Attempt],
        count: int,
        request: str | None,
        fetch: Fetch | None,
        *,
        ahead: bool,
    ) -> Callable[[], Fetched | None]:
        """Write ``batch`` and fetch from ``target`` in one call; its answer, reported, later.

        ``ahead``: only send the call now (see `begin`). An error other than the queue's
        (an outcome that does not encode, refused before anything was sent) writes the
        batch apart, then fetches alone (the same request: nothing of it reached the
        queue). A queue error hands the batch to `failed`.
        """
        lease = fetch.lease if fetch is not None else None
        outcomes: list[Outcome] = [a.outcome for a in batch if a.outcome is not None]
        try:
            if ahead:
                answer = target.begin_exchange(outcomes, max(count, 0), lease, request=request)
            else:
                result = target.exchange(outcomes, max(count, 0), lease, request=request)
                answer = lambda: result  # noqa: E731
        except JobsError:
            self.failed(batch)
            raise
        except BaseException as exc:
            if not batch:
                raise
            self.write_apart(batch, exc)
            if request is None:
                return lambda: None
            fetched = target.exchange((), max(count, 0), lease, request=request)[1]
            return lambda: fetched

        def answered() -> Fetched | None:
            try:
                written, fetched = answer()
            except BaseException:
                self.failed(batch)
                raise
            self.written(batch, written)
            return fetched

        return answered

    def written(self, batch: Sequence[Attempt], replies: Sequence[Written]) -> None:
        """Report a batch written (one reply per attempt, in order)."""
        try:
            self._on_written(batch, replies)
        finally:  # else `drain` would wait for these until it times out
            self._done(len(batch))

    def failed(self, batch: Sequence[Attempt]) -> None:
        """A batch could not be written: keep what its leases still cover, drop the rest."""
        now = time.monotonic()
        keep = [a for a in batch if a.lease_until > now]
        for attempt in batch:
            if attempt.lease_until <= now:
                self._on_dropped(attempt, "the queue unreachable past the lease")
        with self._cv:
            self._pending[:0] = keep
            self._writing -= len(batch)
            self._cv.notify()
            self._drained.notify_all()

    def write_apart(self, batch: Sequence[Attempt], error: BaseException) -> None:
        """Write one by one a batch whose write failed for a reason other than the queue.

        Such an error (an outcome that does not encode, say) comes before anything is
        sent, and would come again for the whole batch: alone, every good outcome is
        recorded, and a bad one is replaced by a failure saying why
        (`_attempt.unwritable`). One that cannot even be written so is dropped (its job
        is re-delivered once its lease expires). A queue error hands what is left to
        `failed`, as for any batch.

        Args:
            batch: the outcomes taken for writing (claimed, or taken by the writer).
            error: what writing them together raised.
        """
        self._logger.warning(
            "writing %d outcomes failed (%s); writing them one by one",
            len(batch),
            _codec.describe(error),
            extra=self._extra,
        )
        for index, attempt in enumerate(batch):
            try:
                self._write_alone(attempt)
            except JobsError:
                self.failed(batch[index:])
                return

    def _write_alone(self, attempt: Attempt) -> None:
        outcome = attempt.outcome
        assert outcome is not None
        try:
            written = attempt.queue.write([outcome])[0]
        except JobsError:
            raise
        except BaseException as exc:  # not the queue: this outcome is the one that does not write
            rescued = _attempt.unwritable(attempt, outcome, exc)
            self._logger.error(
                "job %s: its outcome could not be written (%s); recording a failure instead",
                attempt.leased.job_id,
                _codec.describe(exc),
                exc_info=exc,
                extra=attempt.log_extra(),
            )
            try:
                written = attempt.queue.write([rescued])[0]
            except JobsError:
                raise
            except BaseException as again:
                self._on_dropped(attempt, f"it cannot be written: {_codec.describe(again)}")
                self._done(1)
                return
            attempt.outcome = rescued
        self.written([attempt], [written])

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued so far is written or dropped; True if it was."""
        with self._cv:
            return self._drained.wait_for(
                lambda: not self._pending and not self._riding and not self._writing, timeout
            )

    def _done(self, count: int) -> None:
        with self._cv:
            self._writing -= count
            self._drained.notify_all()

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _step(self) -> float:
        with self._cv:
            while not self._pending and not self.loop.stopping.is_set():
                self._cv.wait()
            batch, self._pending = self._pending, []
            self._writing += len(batch)
        if batch:
            self.send(batch)
        return 0.0


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

    def finish(self, timeout: float) -> bool:
        """Let the hook thread run every hook queued so far, for up to ``timeout`` s; stop it.

        At shutdown. Never in the calling thread: a hook that blocks (a hung HTTP call)
        must not make ``stop()`` hang with it. Past ``timeout`` the hooks still queued are
        dropped, with a warning, and the hook thread (a daemon) is left to its hook.
        Returns whether every hook ran.
        """
        done = threading.Event()
        self._calls.put(done.set)  # runs after every hook queued before it
        finished = done.wait(timeout)
        if not finished:
            self._logger.warning(
                "success/error hooks still running %.1f s into shutdown: the rest are "
                "dropped and stop() returns without them",
                timeout,
            )
        self.loop.stop(timeout=0.0)
        return finished

    def _run(self, hook: Callable[[], object]) -> None:
        try:
            hook()
        except BaseException:  # a hook's SystemExit must not end the hook thread either
            self._logger.exception("a success/error hook raised")
