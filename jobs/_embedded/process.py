"""One private ``redis-server`` process: launched until it answers PING, stopped, reaped.

A server is launched in its own session (``^C`` to the test run does not reach it) and,
on Linux, with a parent-death signal, so a test run killed hard leaves no server behind.
`ServerProcess` holds only what its reaper needs, so that a finalizer can reap it
without holding the `RedisServer` alive.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs._embedded.config import FORBIDDEN_PORT, HOST

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

_POLL_INTERVAL = 0.01


def free_port() -> int:
    """A loopback port nobody listens on now (never 6379)."""
    # The port is free when we look; redis-server binds it a moment later, and start()
    # retries with another port if someone else got there first.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port != FORBIDDEN_PORT:
            return port


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when we die (Linux, main thread only)."""
    # A test run killed hard (pytest-timeout's os._exit, SIGKILL, a CI runner tearing
    # down) runs no atexit hook, so on Linux we also ask the kernel to SIGKILL the server
    # when we die. The kernel ties this to the *thread* that forked, so it is only safe
    # from the main thread, which lives as long as the process.
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return preexec


def _kill(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        popen.kill()
    popen.wait()


class ServerProcess:
    """The running ``redis-server`` of one `RedisServer` (if any) and its owned directory.

    Args:
        owned_directory: a temporary directory that `reap` removes; None: keep it.
    """

    def __init__(self, owned_directory: str | None) -> None:
        self.popen: subprocess.Popen[bytes] | None = None
        self.owned_directory = owned_directory

    def is_running(self) -> bool:
        """Whether the process is alive (a paused server counts as running)."""
        popen = self.popen
        return popen is not None and popen.poll() is None

    def launch(
        self,
        command: list[str],
        directory: Path,
        log_path: Path,
        port: int,
        password: str | None,
        deadline: float,
    ) -> str | None:
        """Run ``command`` and wait for *this* process to answer PING on ``port``.

        Returns:
            None once it answers, else why it did not (with the end of its log); the
            process is gone then.
        """
        offset = log_path.stat().st_size if log_path.exists() else 0
        # Errors before redis opens its log (a bad option, say) go to stderr, so stderr
        # is appended to the same file; stdout is unused once --logfile is set.
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=directory,
                start_new_session=True,  # ^C and signals to our process group skip it
                preexec_fn=parent_death_signal(),
            )
        self.popen = popen
        probe = redis.Redis(
            host=HOST,
            port=port,
            password=password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        last_error: Exception | None = None
        try:
            while True:
                code = popen.poll()
                if code is not None:
                    self.popen = None
                    log_text = _read_from(log_path, offset)
                    return f"exited with code {code}; log:\n{_tail(log_text)}"
                try:
                    probe.ping()
                    # Someone else's server may answer on that port for a moment before
                    # ours fails to bind it; only our own pid means ready.
                    if probe.info("server").get("process_id") == popen.pid:
                        return None
                except redis.RedisError as exc:
                    last_error = exc
                if time.monotonic() >= deadline:
                    _kill(popen)
                    self.popen = None
                    log_text = _read_from(log_path, offset)
                    return f"no PING reply in time ({last_error!r}); log:\n{_tail(log_text)}"
                time.sleep(_POLL_INTERVAL)
        finally:
            probe.close()

    def stop(self, timeout: float) -> None:
        """SIGTERM (and SIGCONT, if paused) the process; SIGKILL it after ``timeout`` s."""
        popen = self.popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.terminate()
                # A stopped process keeps SIGTERM pending until it is continued.
                popen.send_signal(signal.SIGCONT)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill(popen)
        self.popen = None

    def kill(self) -> None:
        """SIGKILL the process and wait for it; nothing if there is none."""
        popen = self.popen
        if popen is None:
            return
        _kill(popen)
        self.popen = None

    def send(self, signum: signal.Signals) -> bool:
        """Send ``signum``; False if the process is not running."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return False
        popen.send_signal(signum)
        return True

    def reap(self) -> None:
        """Kill the process if it runs and remove the owned directory (the finalizer)."""
        popen, self.popen = self.popen, None
        if popen is not None and popen.poll() is None:
            popen.kill()
            popen.wait()
        if self.owned_directory is not None:
            shutil.rmtree(self.owned_directory, ignore_errors=True)
            self.owned_directory = None
