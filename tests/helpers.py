"""Small helpers shared by the tests: polling with a deadline, free ports."""

from __future__ import annotations

import importlib.metadata
import socket
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions from ``predicate`` propagate: catch them inside it if they mean "not yet".
    Raises AssertionError (with ``message``) once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                message
                or f"{getattr(predicate, '__name__', predicate)!s} still false "
                f"after {timeout} s (last value {value!r})"
            )
        time.sleep(interval)


def free_port(highest: int = 65535) -> int:
    """A TCP port on 127.0.0.1, at most ``highest``, that was free a moment ago (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 6379 and port <= highest:
            return port


def checkout_connection(pool: Any) -> Any:
    """A connection from a redis-py pool, on every supported redis-py.

    ``get_connection`` took a (meaningless) command name before redis-py 5.3 and warns
    about one since.
    """
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("PING")


def plugin_args() -> list[str]:
    """pytest arguments that load jobs.testing's plugin, unless its entry point does.

    Installed (tox installs the wheel), pytest loads it by its ``pytest11`` entry point,
    and a ``-p`` for it too would register it twice; from a checkout it needs the ``-p``.
    """
    installed = {
        ep.value for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "jobs"
    }
    return [] if "jobs.testing.plugin" in installed else ["-p", "jobs.testing.plugin"]
