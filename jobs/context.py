"""What a handler sees of its attempt: `JobContext`, backed by a `CancellationToken`.

Timeouts and cancellation are cooperative. Python cannot safely stop a thread from the
outside (an asynchronous exception cannot interrupt a blocking call and can fire inside
a ``finally``), so the pool cancels the attempt's token instead, records the outcome at
once, gives the slot to a fresh thread and discards whatever the handler returns late.
Handlers that check ``ctx.cancelled`` or sleep with ``ctx.sleep`` stop promptly.
"""

from __future__ import annotations

import enum
import threading
from typing import TYPE_CHECKING

from jobs._validators import to_seconds
from jobs.errors import ConfigError, JobCancelled, JobTimeout, LeaseLost, WorkerShutdown
from jobs.log import JobLoggerAdapter

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from datetime import timedelta
    from typing import Any

    from jobs.client import Client
    from jobs.config import JobConfig
    from jobs.handle import JobHandle
    from jobs.job import Job


class CancelReason(enum.StrEnum):
    """Why an attempt's token was cancelled.

    .. versionadded:: 0.1
    """

    #: The attempt ran past its `JobConfig.timeout`; it is recorded as failed and retried by policy.
    TIMEOUT = "timeout"
    #: ``Client.cancel`` was called; the job is recorded cancelled and not retried.
    CANCELLED = "cancelled"
    #: The pool is stopping and ``shutdown_timeout`` elapsed; the job goes back to the queue.
    SHUTDOWN = "shutdown"
    #: This worker lost the job's lease (it stalled past it); another worker has the job now.
    LEASE_LOST = "lease_lost"


_ERRORS: dict[CancelReason, type[Exception]] = {
    CancelReason.TIMEOUT: JobTimeout,
    CancelReason.CANCELLED: JobCancelled,
    CancelReason.SHUTDOWN: WorkerShutdown,
    CancelReason.LEASE_LOST: LeaseLost,
}


#: Guards every token's lazy Event: cancel and wait are rare, creating tokens is not.
_TOKEN_LOCK = threading.Lock()


class CancellationToken:
    """A one-shot, thread-safe cancellation flag with a reason; the first cancel wins.

    The `threading.Event` behind `wait` is only created when someone waits: most attempts
    are never cancelled nor sleep, and a token is made for every attempt.
    """

    __slots__ = ("_event", "_reason")

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._reason: CancelReason | None = None

    def cancel(self, reason: CancelReason) -> bool:
        """Cancel with ``reason``; False if it was already cancelled (its reason stays)."""
        with _TOKEN_LOCK:
            if self._reason is not None:
                return False
            self._reason = reason
            event = self._event
        if event is not None:
            event.set()
        return True

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._reason is not None

    @property
    def reason(self) -> CancelReason | None:
        """The reason given to the first `cancel`, or None."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; True if cancelled."""
        with _TOKEN_LOCK:
            if self._reason is not None:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class JobContext:
    """The handler's view of its attempt: the job, cancellation and a logger.

    Example::

        @registry.job("export")
        def export(ctx: jobs.JobContext, payload: dict) -> dict:
            for chunk in chunks(payload):
                ctx.raise_if_cancelled()   # stop promptly on timeout, cancel or shutdown
                write(chunk)
            return {"chunks": len(chunks)}

    .. versionadded:: 0.1
    """

    __slots__ = ("_client", "_logger", "_report", "_token", "job")

    def __init__(
        self,
        job: Job,
        token: CancellationToken,
        logger: logging.Logger,
        client: Client | None = None,
        report: Callable[[float, str | None], None] | None = None,
    ) -> None:
        #: The job as leased; ``job.attempts`` is this attempt's number (1-based).
        self.job = job
        self._token = token
        self._logger = logger
        self._client = client
        self._report = report

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far the attempt got: ``fraction`` in 0..1, and an optional message.

        Costs no round trip: the pool's next heartbeat (within half a second) stores the
        latest value, readable as ``Job.progress`` from any process. A retry starts with
        none.

        Raises:
            ValueError: ``fraction`` is not a number in 0..1, or ``message`` not a str.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"progress fraction must be a number in 0..1, got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be in 0..1, got {fraction!r}")
        if message is not None and not isinstance(message, str):
            raise ValueError(f"progress message must be a str or None, got {message!r}")
        if self._report is not None:
            self._report(float(fraction), message)

    @property
    def client(self) -> Client | None:
        """The `Client` whose worker pool runs this attempt (None in a bare context)."""
        return self._client

    def enqueue(
        self, job_type: str, payload: Any = None, config: JobConfig | None = None
    ) -> JobHandle:
        """Enqueue a follow-up job with the client that runs this one (`Client.enqueue`).

        It goes to that client's queue, through its ``before_enqueue`` hooks: in a test,
        the queue the test drains (`jobs.testing`).

        Raises:
            ConfigError: this context belongs to no client (built by hand).
        """
        if self._client is None:
            raise ConfigError("this JobContext has no client to enqueue with")
        return self._client.enqueue(job_type, payload, config)

    @property
    def cancelled(self) -> bool:
        """True once the timeout passed, the job was cancelled, or shutdown gave up waiting."""
        return self._token.cancelled

    @property
    def cancel_reason(self) -> CancelReason | None:
        """Why the attempt was cancelled, or None while it was not."""
        return self._token.reason

    def raise_if_cancelled(self) -> None:
        """Raise if the attempt was cancelled; a no-op otherwise.

        Raises:
            JobTimeout: the attempt ran past its timeout.
            JobCancelled: the job was cancelled (or `LeaseLost`, a subclass).
            WorkerShutdown: the pool is stopping and gave up waiting for this attempt.
        """
        reason = self._token.reason
        if reason is not None:
            raise _ERRORS[reason](f"job {self.job.id} attempt {self.job.attempts}: {reason}")

    def sleep(self, seconds: float | timedelta) -> bool:
        """Sleep up to ``seconds`` (or a timedelta).

        Returns:
            True after the full time; False as soon as the attempt is cancelled.
        """
        return not self._token.wait(max(to_seconds(seconds), 0.0))

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``jobs.job``) whose records carry job_id, job_type, attempt and queue."""
        return JobLoggerAdapter(
            self._logger,
            {
                "job_id": self.job.id,
                "job_type": self.job.type,
                "attempt": self.job.attempts,
                "queue": self.job.queue,
            },
        )
