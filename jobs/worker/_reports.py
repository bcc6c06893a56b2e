"""`Reports`: what a pool does once the queue answered for an outcome.

It logs the outcome, queues the success or error hook (``jobs-hooks``), and stops
holding the attempt's lease; an outcome the outbox gave up on is logged as dropped.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from jobs.worker import _attempt
from jobs.worker._attempt import State
from jobs.worker._core import PoolCore, logger
from jobs.worker._events import AttemptResult
from jobs.worker._protocol import Completed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs.worker._attempt import Attempt
    from jobs.worker._events import Guarded
    from jobs.worker._protocol import Outcome, Written


class Reports(PoolCore):
    """The reporting part of a `WorkerPool`: callbacks of its `Outbox`."""

    def _on_dropped(self, attempt: Attempt, why: str) -> None:
        with self._lock:
            self._finish(attempt)
        logger.warning(
            "job %s: outcome not written, %s; it will be re-delivered",
            attempt.leased.job_id,
            why,
            extra=attempt.log_extra(),
        )

    def _finish(self, attempt: Attempt) -> None:
        """Its outcome is written (or given up on) (the lock is held)."""
        if attempt.state is State.FINISHED:
            attempt.state = State.DONE
        # An abandoned attempt stays ABANDONED: its slot thread checks that on return.
        self._release(attempt)

    def _on_written(self, batch: Sequence[Attempt], replies: Sequence[Written]) -> None:
        with self._lock:
            for attempt in batch:
                self._finish(attempt)
        if self._events is not None:
            _tell_written(self._events, batch, replies)
        quiet = not logger.isEnabledFor(logging.DEBUG) and self._hooks is None
        for attempt, written in zip(batch, replies, strict=True):
            outcome = attempt.outcome
            if outcome is None or (quiet and written.recorded and isinstance(outcome, Completed)):
                continue  # the common case, with nothing to log or call
            try:
                self._report(attempt, outcome, written)
            except BaseException:  # its outcome is written; the other reports must still run
                logger.exception(
                    "job %s: reporting its outcome failed",
                    attempt.leased.job_id,
                    extra=attempt.log_extra(),
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
                attempt.leased.job_id,
                extra=extra,
            )
            return
        if isinstance(outcome, Completed):
            logger.debug("job %s completed", attempt.leased.job_id, extra=extra)
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
                attempt.leased.job_id,
                outcome.error,
                exc_info=outcome.exc,
                extra=extra,
            )
        else:
            logger.warning(
                "job %s attempt %d failed, will retry: %r",
                attempt.leased.job_id,
                attempt.number,
                outcome.error,
                extra=extra,
            )
        error_hook = self.config.error_handler
        if error_hook is not None and self._hooks is not None and attempt.job is not None:
            job = _attempt.recorded_job(
                attempt, outcome, written.status, written.now_ms, written.run_at_ms
            )
            exc = outcome.exc
            assert exc is not None  # every failure the pool decides carries its error
            self._hooks.call(lambda: error_hook(job, exc))


def _tell_written(events: Guarded, batch: Sequence[Attempt], replies: Sequence[Written]) -> None:
    """Tell the events observer how each written attempt ended."""
    for attempt, written in zip(batch, replies, strict=True):
        if not written.recorded:
            events.write_rejected(attempt.queue.name, attempt.job_type)
            continue
        if isinstance(attempt.outcome, Completed):
            result = AttemptResult.COMPLETED
        elif written.status == "failed":
            result = AttemptResult.FAILED
        else:
            result = AttemptResult.RETRIED
        events.finished(attempt.queue.name, attempt.job_type, result, attempt.duration)
