"""Every example in README.rst and docs/, against a private Redis, runs exactly as printed.

Each Python block runs as its own script (``python block.py``) in a directory holding the
files the documents write (``app.py`` ...), with ``REDIS_URL`` set to the test's private server: the
examples read it the way a reader's program would. Each console block runs its ``python
-m jobs`` lines in order, with a job id shown in the example standing for the one the
block's last ``enqueue`` printed; ``worker`` and ``scheduler`` lines run in the
background until the block ends, then get SIGTERM and must exit 0. The two opening
commands (install + demo, install + tox) are what CI and tests/integration/test_demo.py
run already.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

import jobs
from tests.helpers import plugin_args, wait_until
from tests.unit.test_readme import JOB_ID, Block, all_blocks

if TYPE_CHECKING:
    from pathlib import Path

#: One example, interpreter start included; the slowest waits a second or two.
EXAMPLE_TIMEOUT = 30


def _env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOBS_TRACEBACK"}
    env["REDIS_URL"] = redis_url
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for block in all_blocks():
        if block.file_name is not None:
            (tmp_path / block.file_name).write_text(block.code)
    return tmp_path


def _runnable(language: str) -> list[Block]:
    return [b for b in all_blocks() if b.language == language and b.file_name is None]


def _id(block: Block) -> str:
    return block.where


#: Directives that run a block against a topology instead of the plain server.
TOPOLOGIES = {"with a cluster": "cluster", "with sentinels": "sentinel"}


@pytest.mark.parametrize("block", _runnable("python"), ids=_id)
def test_python_example(
    block: Block, redis_url: str, workdir: Path, request: pytest.FixtureRequest
) -> None:
    if block.directive in TOPOLOGIES:
        redis_url = request.getfixturevalue(TOPOLOGIES[block.directive]).url
    # One name per block: two documents may have a block on the same line.
    script = workdir / ("example_" + re.sub(r"\W", "_", block.where) + ".py")
    script.write_text(block.code)
    command = [sys.executable, str(script)]
    if block.directive == "pytest":
        command = [sys.executable, "-m", "pytest", "-q", *plugin_args(), str(script)]
    if block.directive == "sigterm when the worker is live":
        _run_until_signalled(command, redis_url, workdir)
        return
    proc = subprocess.run(
        command,
        cwd=workdir,
        env=_env(redis_url),
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    # Its stderr may hold the library's own log lines (a failed job's traceback, for
    # one): with no logging configured, Python prints warnings and errors there.
    assert proc.returncode == 0, f"{block.where}\n{proc.stdout}\n{proc.stderr}"


def _run_until_signalled(command: list[str], redis_url: str, workdir: Path) -> None:
    queue = jobs.RedisQueue.from_url(redis_url)
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: queue.workers(), timeout=EXAMPLE_TIMEOUT, message="no pool showed up")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=EXAMPLE_TIMEOUT)
        assert proc.returncode == 0, stderr
        assert queue.workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        queue.close()


def _is_runnable_command(command: str) -> bool:
    # Installing, tox and the demo are what CI and test_demo.py run; the dashboard serves
    # until stopped, and test_dashboard.py runs it.
    return (
        command.startswith("python -m jobs")
        and not command.endswith(" demo")
        and (" dashboard" not in command)
    )


@pytest.mark.parametrize(
    "block",
    [
        b
        for b in _runnable("console")
        if any(_is_runnable_command(line.removeprefix("$ ")) for line in b.code.splitlines())
    ],
    ids=_id,
)
def test_console_example(block: Block, redis_url: str, workdir: Path) -> None:
    env = _env(redis_url)
    last_id = "0" * 32
    background: list[subprocess.Popen[bytes]] = []
    try:
        for line in block.code.splitlines():
            command = line.removeprefix("$ ")
            if not line.startswith("$ ") or not _is_runnable_command(command):
                continue
            argv = [sys.executable, *shlex.split(JOB_ID.sub(last_id, command))[1:]]
            if argv[3] in ("worker", "scheduler"):
                background.append(_start(argv, env, workdir))
                continue
            if "--watch" in argv:
                argv += ["--count", "2", "--interval", "0.1"]
            done = subprocess.run(
                argv,
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=EXAMPLE_TIMEOUT,
                check=False,
            )
            assert done.returncode == 0, f"{block.where}: {command}\n{done.stderr}"
            if argv[3] == "enqueue":
                last_id = done.stdout.split()[-1]
        for proc in background:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXAMPLE_TIMEOUT) == 0, block.where
    finally:
        for proc in background:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _start(argv: list[str], env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    log = workdir / f"background-{len(list(workdir.glob('background-*')))}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_until(
            lambda: " running (pid " in log.read_text(),
            timeout=EXAMPLE_TIMEOUT,
            message=f"{shlex.join(argv)} never said it was running:\n{log.read_text()}",
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc
