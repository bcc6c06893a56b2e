"""Writing finished attempts to Redis in batches, and running the user's hooks.

Handler threads never wait for Redis: they drop their outcome here and take the next job.
Outcomes leave by one of two doors, always in batches:

- the fetcher *claims* the outbox while the pool is busy: an outcome whose slot woke the
  fetcher to fetch goes in the same pipeline as that fetch, one round trip for both;
- the writer thread takes everything else at once: an outcome that wakes no fetch (the
  pool's slots and prefetch are still full enough), and whatever the fetcher leaves when
  it goes to wait (for a slot to free, or for new work).

So no outcome waits for the fetcher's next decision, however long the jobs still
running take.

When Redis is unreachable an outcome is retried for as long as its lease holds (heartbeats
keep extending it once Redis is back); past that it is dropped and the job is re-delivered
by the reaper: at-least-once, never a double record.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import redis

from jobs import _codec
from jobs._loops import Loop
from jobs.worker import _attempt
from jobs.worker._attempt import Completed

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from jobs.queue._wire import Failure, HeldJob
    from jobs.queue._wire import Outcome as Written
    from jobs.worker._attempt import Attempt, Outcome


#: What a Redis that is unreachable or being reconfigured raises (redis-py's cluster
#: errors are not `redis.RedisError`): the outcomes wait and are tried again.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


class Pending(NamedTuple):
    """An outcome waiting to be written."""

    attempt: Attempt
    outcome: Outcome


def split(
    batch: Sequence[Pending],
) -> tuple[list[tuple[HeldJob, bytes]], list[Failure], list[Pending]]:
    """A batch as `RedisQueue.exchange` takes it.

    Returns:
        The completions, the failures, and the batch in the order of the replies.
    """
    completions: list[tuple[HeldJob, bytes]] = []
    failures: list[Failure] = []
    done: list[Pending] = []
    failed: list[Pending] = []
    for pending in batch:
        outcome = pending.outcome
        if isinstance(outcome, Completed):
            completions.append((pending.attempt.held, outcome.result))
            done.append(pending)
        else:
            failures.append(outcome.failure)
            failed.append(pending)
    return completions, failures, done + failed


class Outbox:
    """Outcomes waiting to be written, and the writer thread that writes them."""

    def __init__(
        self,
        queue_name: str,
        on_written: Callable[[Sequence[Pending], Sequence[Written]], None],
        on_dropped: Callable[[Attempt, str], None],
        logger: logging.Logger,
    ) -> None:
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._logger = logger
        self._extra: dict[str, object] = {"queue": queue_name}
        self._cv = threading.Condition()
        self._pending: list[Pending] = []  # for the writer thread
        self._riding: list[Pending] = []  # for the fetch a slot just woke the fetcher for
        self._writing = 0  # outcomes taken and not yet written or dropped
        self._claimed = False  # the fetcher will take what rides along with its fetch
        self.loop = Loop(
            "jobs-writer", self._step, logger, wake=self._wake, extra={"queue": queue_name}
        )

    def put(self, attempt: Attempt, outcome: Outcome, *, fetch_soon: bool = False) -> None:
        """Queue an outcome for writing.

        Args:
            attempt: whose outcome it is.
            outcome: what to write.
            fetch_soon: the fetcher was just woken to fetch (the caller decided that under
                the pool's lock, and puts under it too: see `hand_over`); if it holds the
                claim, the outcome goes with that fetch instead of waking the writer.
        """
        with self._cv:
            if self._claimed and fetch_soon:
                self._riding.append(Pending(attempt, outcome))
            else:
                self._pending.append(Pending(attempt, outcome))
                self._cv.notify_all()

    def claim(self) -> list[Pending]:
        """For the fetcher: take everything now, and hold the claim until `release`."""
        with self._cv:
            self._claimed = True
            batch = self._riding + self._pending
            self._riding, self._pending = [], []
            self._writing += len(batch)
            return batch

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
        if self._riding:
            self._pending += self._riding
            self._riding = []
            self._cv.notify_all()

    def written(self, batch: Sequence[Pending], replies: Sequence[Written]) -> None:
        """Report a batch written (replies in `split` order, as `RedisQueue.exchange` gives)."""
        try:
            self._on_written(batch, replies)
        finally:  # else `drain` would wait for these until it times out
            self._done(len(batch))

    def failed(self, batch: Sequence[Pending]) -> None:
        """A batch could not be written: keep what its leases still cover, drop the rest."""
        now = time.monotonic()
        keep = [p for p in batch if p.attempt.lease_until > now]
        for pending in batch:
            if pending.attempt.lease_until <= now:
                self._on_dropped(pending.attempt, "Redis unreachable past the lease")
        with self._cv:
            self._pending[:0] = keep
            self._writing -= len(batch)
            self._cv.notify_all()

    def write_apart(self, batch: Sequence[Pending], error: BaseException) -> None:
        """Write one by one a batch whose write failed for a reason other than Redis.

        Such an error (an outcome that does not encode, say) comes before anything is
        sent, and would come again for the whole batch: alone, every good outcome is
        recorded, and a bad one is replaced by a failure saying why
        (`_attempt.unwritable`). One that cannot even be written so is dropped (its job
        is re-delivered once its lease expires). A Redis error hands what is left to
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
        for index, pending in enumerate(batch):
            try:
                self._write_alone(pending)
            except REDIS_ERRORS:
                self.failed(batch[index:])
                return

    def _write_alone(self, pending: Pending) -> None:
        attempt, outcome = pending
        try:
            written = _exchange_one(pending)
        except REDIS_ERRORS:
            raise
        except BaseException as exc:  # not Redis: this outcome is the one that does not write
            rescued = Pending(attempt, _attempt.unwritable(attempt, outcome, exc))
            self._logger.error(
                "job %s: its outcome could not be written (%s); recording a failure instead",
                attempt.held.job_id,
                _codec.describe(exc),
                exc_info=exc,
                extra=attempt.log_extra(),
            )
            try:
                written = _exchange_one(rescued)
            except REDIS_ERRORS:
                raise
            except BaseException as again:
                self._on_dropped(attempt, f"it cannot be written: {_codec.describe(again)}")
                self._done(1)
                return
            pending = rescued
        self.written([pending], [written])

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued so far is written or dropped; True if it was."""
        with self._cv:
            return self._cv.wait_for(
                lambda: not self._pending and not self._riding and not self._writing, timeout
            )

    def _done(self, count: int) -> None:
        with self._cv:
            self._writing -= count
            self._cv.notify_all()

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _step(self) -> float:
        with self._cv:
            while not self._pending and not self.loop.stopping.is_set():
                self._cv.wait()
            batch, self._pending = self._pending, []
            self._writing += len(batch)
        if not batch:
            return 0.0
        by_queue: dict[int, list[Pending]] = {}
        for pending in batch:
            by_queue.setdefault(id(pending.attempt.queue), []).append(pending)
        groups = list(by_queue.values())
        for index, group in enumerate(groups):
            completions, failures, ordered = split(group)
            try:
                done, failed, _ = group[0].attempt.queue.exchange(completions, failures, 0, None)
            except REDIS_ERRORS:
                self.failed([p for rest in groups[index:] for p in rest])
                raise
            except BaseException as exc:
                self.write_apart(ordered, exc)
                continue
            self.written(ordered, done + failed)
        return 0.0


def _exchange_one(pending: Pending) -> Written:
    """Write one outcome alone; how it ended."""
    completions, failures, _ = split([pending])
    done, failed, _ = pending.attempt.queue.exchange(completions, failures, 0, None)
    return (done + failed)[0]


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
