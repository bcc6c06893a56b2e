"""``python -m jobs demo``, run for real: against a given server, and with no Redis at all.

The embedded path is proven inside a fresh network namespace (``unshare -n``, root only),
where nothing listens on 6379 and only loopback is up: the demo must notice, start its
own redis-server, run every act and say so. Elsewhere that test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.integration.test_cli import run_in_pty

if TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.slow

ACT_TITLES = [
    "[1/8] Typed payloads",
    "[2/8] Priorities",
    "[3/8] A delayed job",
    "[4/8] Retries",
    "[5/8] A permanent failure",
    "[6/8] A timeout",
    "[7/8] Cancelling a running job",
    "[8/8] A cron job",
    "Final stats",
]
#: The demo promises under 30 s; this leaves room for a loaded CI machine.
LIMIT = 60


def _env_without_redis_url() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "JOBS_TRACEBACK")}


def _check_story(output: str) -> None:
    for title in ACT_TITLES:
        assert title in output, (title, output)
    assert "they ran in this order: urgent -> low-1 -> low-2 -> low-3" in output
    assert "attempt 3 completed" in output
    assert "failed after 1 attempt of 4 allowed: PermanentError" in output
    assert "JobTimeout" in output
    assert "the job is cancelled" in output
    assert output.count("after its fire time") >= 3
    assert "completed_jobs: " in output
    assert "Traceback" not in output


def test_demo_against_a_given_server_on_a_terminal(
    redis_url: str, redis_client: redis.Redis
) -> None:
    started = time.monotonic()
    code, output = run_in_pty(["demo", "--redis-url", redis_url], redis_url, timeout=LIMIT)
    assert time.monotonic() - started < LIMIT
    assert code == 0, output
    _check_story(output)
    assert "Using the Redis at 127.0.0.1:" in output
    # The live progress line, redrawn in place under the narration.
    assert re.search(r"\r\x1b\[2K +\d+\.\ds  pending \d+  scheduled \d+  running \d+", output)
    # Everything under the demo's own prefix is gone, and there was nothing else.
    assert redis_client.keys("*") == []
    assert "deleted the demo's" in output


def _netns_available() -> str | None:
    """Why the network-namespace test cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root for unshare -n"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n failed: {probe.stderr.decode(errors='replace').strip()}"
    return None


def test_demo_starts_a_private_redis_when_nothing_answers(redis_binary: str) -> None:
    reason = _netns_available()
    if reason is not None:
        pytest.skip(reason)
    env = _env_without_redis_url()
    started = time.monotonic()
    proc = subprocess.run(
        [
            "unshare", "-n", "sh", "-c",
            'ip link set lo up && exec "$0" -m jobs demo',
            sys.executable,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=LIMIT,
        check=False,
    )  # fmt: skip
    assert time.monotonic() - started < LIMIT
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_story(proc.stdout)
    assert "Nothing answers at localhost:6379, so the demo started a private redis-server" in (
        proc.stdout
    )
    # Not a terminal: plain lines, no progress line.
    assert "\x1b" not in proc.stdout
    assert proc.stderr == ""
