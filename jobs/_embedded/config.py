"""A private server's options, and the ``redis-server`` command line they make.

Nothing is inherited from a config file: the command line sets every option that
matters, with RDB snapshots off and the server bound to the loopback address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from jobs._embedded.binary import binary_version

if TYPE_CHECKING:
    from pathlib import Path

#: The only address a private server listens on.
HOST = "127.0.0.1"
#: The developer's own Redis; refused outright rather than risked.
FORBIDDEN_PORT = 6379
#: The server's log, in its directory.
LOG_NAME = "redis.log"
_APPENDFSYNC = frozenset({"always", "everysec", "no"})


def check_options(port: int | None, appendfsync: str) -> None:
    """Refuse the options no private server may have.

    Raises:
        ValueError: port 6379 or out of range, or an unknown appendfsync policy.
    """
    if port == FORBIDDEN_PORT:
        raise ValueError("port 6379 is the developer's own Redis; a private server never uses it")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    if appendfsync not in _APPENDFSYNC:
        raise ValueError(f"appendfsync must be one of {sorted(_APPENDFSYNC)}, got {appendfsync!r}")


@attrs.frozen
class ServerConfig:
    """What a private server runs with, whatever its port (checked by `check_options`)."""

    binary: str
    #: The working directory (AOF files, the log), resolved.
    directory: Path
    appendonly: bool
    appendfsync: str
    password: str | None
    extra_args: tuple[str, ...]

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / LOG_NAME

    def command(self, port: int) -> list[str]:
        """The ``redis-server`` command line for ``port``."""
        args = [
            self.binary,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if binary_version(self.binary) >= (7,):
            # 7.0 disables DEBUG by default; 6.2 always allows it and rejects the option.
            args += ["--enable-debug-command", "yes"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += self.extra_args
        return args
