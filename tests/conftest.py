"""What every test needs, unit or integration: a guard around the developer's Redis.

Tests only ever talk to private redis-server processes (see tests/integration/conftest.py).
A client built with defaults (``redis.Redis()``) would quietly reach 127.0.0.1:6379, where
a FLUSHALL destroys someone's data, so any TCP connect to port 6379 fails the test instead.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from collections.abc import Iterator

_FORBIDDEN_PORT = 6379

# The test command (tox) runs the property tests derandomized: every run explores the same
# examples, so a red CI run is reproducible and a green one means the same on every
# machine. Locally they explore afresh each time (HYPOTHESIS_PROFILE unset).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True, scope="session")
def _never_the_developers_redis() -> Iterator[None]:
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def refuse(sock: socket.socket, address: Any) -> None:
        # pytest.fail raises a BaseException, which redis-py's "except OSError" around
        # connect does not swallow into a retry.
        if (
            sock.family in (socket.AF_INET, socket.AF_INET6)
            and isinstance(address, tuple)
            and len(address) >= 2
            and address[1] == _FORBIDDEN_PORT
        ):
            pytest.fail(f"a test tried to connect to {address[0]}:{_FORBIDDEN_PORT}")

    def connect(sock: socket.socket, address: Any) -> None:
        refuse(sock, address)
        original(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        refuse(sock, address)
        return original_ex(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Escape lone surrogates in a report's captured output, before xdist sends it.

    Some tests make jobs fail with the text of an undecodable file name (``os.fsdecode``
    gives lone surrogates), and the worker logs the error's traceback, which carries it
    raw. A pytest-xdist worker cannot encode such text to send its report, and dies.
    """
    report.sections = [(title, _escaped(content)) for title, content in report.sections]
    if isinstance(report.longrepr, str):
        report.longrepr = _escaped(report.longrepr)


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
