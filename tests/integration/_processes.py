"""Worker pools in real subprocesses (tests/integration/worker_process.py), for fault tests.

`spawn_worker` starts one and returns once it printed READY; `stop_worker` signals one and
returns its exit code; the `worker_procs` fixture spawns through a `WorkerProcs` that
kills whatever is left at teardown (SIGCONT first, so a stopped one can die), pass or
fail. Each worker's stderr (its log) goes to a file under the test's tmp_path, which
`WorkerProcs.log_tail` reads for failure messages.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from jobs._embedded.process import parent_death_signal

if TYPE_CHECKING:
    from collections.abc import Iterator

WORKER_SCRIPT = Path(__file__).resolve().parent / "worker_process.py"
READY = b"READY"
#: Interpreter start, imports and the pool's threads; generous for a loaded CI machine.
READY_TIMEOUT = 20.0

Worker = subprocess.Popen[bytes]


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _reap(proc: Worker) -> None:
    # Kill, wait and close the pipe: an unwaited Popen or an open pipe is a
    # ResourceWarning, which this suite turns into an error.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def spawn_worker(
    redis_url: str,
    queue: str,
    workers: int = 2,
    lease: float = 1.0,
    *,
    poll_interval: float = 0.2,
    shutdown_timeout: float = 5.0,
    max_lost_leases: int | None = None,
    record_url: str | None = None,
    cap: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Worker:
    """Start worker_process.py and return once it printed READY.

    Raises:
        RuntimeError: it exited, or said nothing, before READY (the message holds its log).
    """
    command = [
        sys.executable,
        str(WORKER_SCRIPT),
        "--redis-url", redis_url,
        "--queue", queue,
        "--workers", str(workers),
        "--lease", str(lease),
        "--poll-interval", str(poll_interval),
        "--shutdown-timeout", str(shutdown_timeout),
    ]  # fmt: skip
    if max_lost_leases is not None:
        command += ["--max-lost-leases", str(max_lost_leases)]
    if record_url is not None:
        command += ["--record-url", record_url]
    if cap is not None:
        command += ["--cap", str(cap)]
    log = log_path.open("ab") if log_path is not None else None
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # A log nobody reads must not go to a pipe: a full pipe would block the
            # worker's logging, and with it the worker.
            stderr=log if log is not None else subprocess.DEVNULL,
            # ^C in the terminal reaches pytest only; the fixture ends the workers.
            start_new_session=True,
            # If pytest itself is killed, the kernel kills the workers too (Linux).
            preexec_fn=parent_death_signal(),
        )
    finally:
        if log is not None:
            log.close()
    try:
        _wait_ready(proc, ready_timeout)
    except RuntimeError as exc:
        _reap(proc)
        raise RuntimeError(f"{exc}; its log:\n{_tail(log_path)}") from None
    except BaseException:
        _reap(proc)
        raise
    return proc


def _wait_ready(proc: Worker, timeout: float) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while READY not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"worker {proc.pid} printed no READY within {timeout} s")
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = proc.wait()
            raise RuntimeError(f"worker {proc.pid} exited with code {code} before READY")
        seen += chunk


def stop_worker(proc: Worker, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send ``sig`` and wait for the process to exit; return its exit code.

    A negative code means a signal ended it (``-9`` for SIGKILL).

    Raises:
        AssertionError: it was still running after ``timeout`` seconds (it is then killed).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _reap(proc)
        raise AssertionError(
            f"worker {proc.pid} still ran {timeout} s after signal {sig}; killed it"
        ) from None
    if proc.stdout is not None:
        proc.stdout.close()
    return code


class WorkerProcs:
    """Spawns workers, remembers them, and kills every one still alive in `close`."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[Worker] = []
        self._logs: dict[int, Path] = {}

    def spawn(
        self,
        redis_url: str,
        queue: str,
        workers: int = 2,
        lease: float = 1.0,
        *,
        poll_interval: float = 0.2,
        shutdown_timeout: float = 5.0,
        max_lost_leases: int | None = None,
        record_url: str | None = None,
        cap: int | None = None,
    ) -> Worker:
        """`spawn_worker`, tracked; its log goes to ``worker-<n>.log`` in the log directory."""
        log_path = self._log_dir / f"worker-{len(self._procs) + 1}.log"
        proc = spawn_worker(
            redis_url,
            queue,
            workers,
            lease,
            poll_interval=poll_interval,
            shutdown_timeout=shutdown_timeout,
            max_lost_leases=max_lost_leases,
            record_url=record_url,
            cap=cap,
            log_path=log_path,
        )
        self._procs.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    @property
    def all(self) -> list[Worker]:
        """Every worker spawned so far, dead or alive."""
        return list(self._procs)

    def log_path(self, proc: Worker) -> Path | None:
        """Where ``proc`` logs."""
        return self._logs.get(proc.pid)

    def log_tail(self, proc: Worker, lines: int = 30) -> str:
        """The last lines of ``proc``'s log, for assertion messages."""
        return _tail(self._logs.get(proc.pid), lines)

    def close(self) -> None:
        """Kill and reap every worker still running; idempotent."""
        procs, self._procs = self._procs, []
        for proc in procs:
            _reap(proc)


@pytest.fixture
def worker_procs(tmp_path: Path) -> Iterator[WorkerProcs]:
    """A `WorkerProcs` whose workers are all killed at teardown, whatever the outcome."""
    procs = WorkerProcs(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
