"""Running a worker pool or a scheduler in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from jobs.cli import _format as fmt
from jobs.errors import CliError

if TYPE_CHECKING:
    from jobs.client import Client
    from jobs.schedule.scheduler import Scheduler

logger = logging.getLogger("jobs.cli")


def _ignore_signal(signum: int, frame: object) -> None:
    """Installed so that SIGINT and SIGTERM only wake the main thread (see `_SignalPipe`)."""


class _SignalPipe:
    """SIGINT and SIGTERM, and "the stop has finished", as bytes on a pipe the main thread reads.

    The signal number is written by the interpreter's C-level handler (`signal.set_wakeup_fd`),
    so the Python-level handler does nothing: no library code (and none of its locks) ever
    runs inside a signal handler, where taking a lock the interrupted frame holds would
    deadlock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._saved: list[tuple[int, Any]] = []
        self._saved_fd = -1

    def __enter__(self) -> _SignalPipe:
        self._saved_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved.append((signum, signal.signal(signum, _ignore_signal)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._saved:
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._saved_fd)
        os.close(self._read)
        os.close(self._write)

    def next(self, timeout: float | None = None) -> int | None:
        """Block until a signal arrives (its number) or `post` is called (its code).

        Returns None when ``timeout`` seconds pass first.
        """
        while True:
            if timeout is not None and not select.select([self._read], [], [], timeout)[0]:
                return None
            data = os.read(self._read, 1)
            if data:
                return data[0]

    def post(self, code: int = 0) -> None:
        """Wake `next` with ``code`` (0: the stop has finished)."""
        os.write(self._write, bytes([code]))


def _stop_at_stdin_eof(pipe: _SignalPipe) -> None:
    # Under `--processes`, the supervisor closes our stdin to stop us, and its death
    # closes it too: either way we stop gracefully, as on SIGTERM.
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(65536):
            pass
    pipe.post(signal.SIGTERM)


def serve(
    client: Client | None, scheduler: Scheduler | None, what: str, *, supervised: bool = False
) -> int:
    """Run until SIGINT/SIGTERM, then stop gracefully; a second signal stops at once.

    ``supervised``: run by `jobs.cli._supervisor`; the end of stdin counts as a SIGTERM.
    """
    with _SignalPipe() as pipe:
        if supervised:
            threading.Thread(
                target=_stop_at_stdin_eof, args=(pipe,), name="jobs-cli-stdin", daemon=True
            ).start()
        if client is not None:
            client.start()
        if scheduler is not None:
            try:
                scheduler.start()
            except BaseException:
                if client is not None:
                    client.stop()
                raise
        logger.info("%s running (pid %d); stop it with Ctrl-C or SIGTERM", what, os.getpid())
        signum = pipe.next() or signal.SIGTERM
        timeout = client.config.worker_pool_config.shutdown_timeout.total_seconds() if client else 0
        logger.info(
            "%s received: stopping gracefully (running jobs get up to %g s to finish; "
            "signal again to stop at once)",
            signal.Signals(signum).name,
            timeout,
        )
        failed: list[BaseException] = []

        def stop_all() -> None:
            try:
                if scheduler is not None:
                    scheduler.stop()
                if client is not None:
                    client.stop()
            except BaseException as exc:
                failed.append(exc)
            finally:
                pipe.post()

        # The stop runs in its own thread so that the main thread stays free to notice a
        # second signal while the stop waits for running jobs.
        stopper = threading.Thread(target=stop_all, name="jobs-cli-stop", daemon=True)
        stopper.start()
        hurried = False
        while (code := pipe.next()) != 0:
            signum = code or signal.SIGTERM
            if hurried or client is None:
                continue
            hurried = True
            logger.warning(
                "%s again: stopping at once; running jobs are cancelled and returned to the queue",
                signal.Signals(signum).name,
            )
            client.stop(timeout=0)
        stopper.join()
    if failed:
        raise CliError(f"stopping failed: {fmt.one_line(repr(failed[0]))}")
    logger.info("%s stopped cleanly", what)
    return 0


def exit_now(code: int) -> NoReturn:
    # A handler that ignores its cancellation token keeps a non-daemon executor thread
    # alive, and interpreter exit would join it forever; every job is already handed
    # back or recorded at this point, so nothing is lost by not waiting for it.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
