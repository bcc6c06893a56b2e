"""``python -m jobs worker --processes N``: N worker processes, supervised.

For CPU-bound handlers, which one process cannot run in parallel (the GIL). The
supervisor starts N copies of the same ``python -m jobs worker`` command, each a full
worker (its own thread pool, heartbeat and registry record), restarts any that dies, and
stops them all gracefully on SIGTERM or SIGINT.

Children run in their own process group, so a Ctrl-C in a terminal reaches only the
supervisor, which passes each stop on exactly once: the first by closing the child's
stdin (a child also stops when its supervisor dies, for the same reason), the second by
SIGINT (stop at once). Under systemd, use ``KillMode=mixed`` so that only the supervisor
gets the SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import attrs

from jobs.cli._metrics import PROCESS_NUMBER_ENV
from jobs.cli._serve import _SignalPipe

logger = logging.getLogger("jobs.cli")

#: Set in every child's environment (to the supervisor's pid): the child's stdin is its
#: supervisor's lifeline, and it refuses ``--processes``, so that no child supervises.
SUPERVISED_ENV = "JOBS_SUPERVISED_BY"
#: A child that dies sooner than this after starting is restarted with a growing delay.
STABLE_AFTER = 10.0
#: The longest delay before restarting a child that keeps dying.
MAX_RESTART_DELAY = 30.0
#: How often the supervisor looks at its children when no signal arrives.
CHECK_INTERVAL = 0.2


@attrs.define
class _Child:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0  # when to start it again (monotonic), after it died
    delay: float = 0.0  # the current restart delay
    exit_code: int | None = None


def supervise(argv: list[str], processes: int, redis_url: str | None = None) -> int:
    """Run ``python -m jobs *argv`` in ``processes`` children until SIGTERM/SIGINT.

    ``redis_url``, when given, reaches the children as ``$REDIS_URL``: a password on
    their command line would show in every local user's process list.

    Returns:
        0 when every child stopped cleanly (exit code 0) after the stop, else 1.
    """
    command = [sys.executable, "-m", "jobs", *argv]
    env = {**os.environ, SUPERVISED_ENV: str(os.getpid())}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    children = [_Child(number) for number in range(1, processes + 1)]
    stops = 0
    with _SignalPipe() as pipe:
        for child in children:
            _start(child, command, env)
        logger.info("supervising %d worker processes; stop with Ctrl-C or SIGTERM", processes)
        while True:
            signum = pipe.next(timeout=CHECK_INTERVAL)
            if signum:
                stops += 1
                _stop(children, stops, signum)
            now = time.monotonic()
            for child in children:
                _check(child, command, env, now, stopping=stops > 0)
            if stops and all(c.process is None for c in children):
                break
    codes = [c.exit_code for c in children]
    logger.info("all worker processes stopped (exit codes %s)", codes)
    return 0 if all(code == 0 for code in codes) else 1


def _start(child: _Child, command: list[str], env: dict[str, str]) -> None:
    # Its number tells a child which of the N ports is its own (``--metrics-port``).
    env = {**env, PROCESS_NUMBER_ENV: str(child.number)}
    child.process = subprocess.Popen(
        command, stdin=subprocess.PIPE, env=env, start_new_session=True
    )
    child.started = time.monotonic()
    logger.info("worker process %d started (pid %d)", child.number, child.process.pid)


def _stop(children: list[_Child], stops: int, signum: int) -> None:
    name = signal.Signals(signum).name
    if stops == 1:
        logger.info("%s received: stopping the worker processes gracefully", name)
    elif stops == 2:
        logger.warning("%s again: the worker processes stop at once", name)
    for child in children:
        process = child.process
        if process is None:
            continue
        if stops == 1 and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        elif stops == 2:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGINT)


def _check(
    child: _Child, command: list[str], env: dict[str, str], now: float, *, stopping: bool
) -> None:
    process = child.process
    if process is None:
        if not stopping and child.restart_at and now >= child.restart_at:
            _start(child, command, env)
        return
    code = process.poll()
    if code is None:
        return
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    child.process, child.exit_code = None, code
    if stopping:
        logger.info("worker process %d (pid %d) exited with %d", child.number, process.pid, code)
        return
    # A child that ran a while gets restarted at once; one that keeps dying, less often.
    stable = now - child.started >= STABLE_AFTER
    child.delay = 0.0 if stable else min(max(child.delay * 2, 1.0), MAX_RESTART_DELAY)
    child.restart_at = now + child.delay
    logger.warning(
        "worker process %d (pid %d) exited with %d; restarting it in %.0f s",
        child.number,
        process.pid,
        code,
        child.delay,
    )
