"""The benchmark harness runs end to end and reports every figure (never how fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"

SECTIONS = (
    "Machine and versions",
    "Targets for jobs",
    "All figures side by side",
    "Redis commands per job, by command (MONITOR)",
    "Queue depth (jobs only)",
    "Profile of a jobs worker",
    "How each library's workers ran",
)

ROWS = (
    "enqueue, one call per job (jobs/s)",
    "enqueue, bulk 1000 per call (jobs/s)",
    "drain INCR body, 1 process x 3 threads (jobs/s)",
    "drain INCR body, 2 processes x 2 threads (jobs/s)",
    "drain empty body, 1 process x 3 threads (jobs/s)",
    "drain empty body, 2 processes x 2 threads (jobs/s)",
    "Redis commands per job, draining, top-level",
    "Redis commands per job, draining, inside scripts",
    "pickup latency p99 (ms)",
    "idle Redis commands/s (one pool)",
    "idle CPU (% of one core)",
    "worker RSS idle (MB)",
    "Redis bytes per queued job",
    "Redis bytes per completed job (records kept)",
)


@pytest.mark.slow
def test_harness_reports_every_figure(redis_binary: str, tmp_path: Path) -> None:
    output, raw = tmp_path / "RESULTS.rst", tmp_path / "results.json"
    env = dict(os.environ, JOBS_REDIS_SERVER=redis_binary)
    with subprocess.Popen(
        [
            sys.executable, str(RUN), "--no-peers", "--quick",
            "--jobs", "150", "--threads", "3", "--threads-2p", "2",
            "--latency-samples", "5", "--idle-seconds", "0.3", "--monitor-jobs", "60",
            "--output", str(output), "--json", str(raw),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as harness:  # fmt: skip
        try:
            stdout, stderr = harness.communicate(timeout=50)
        except subprocess.TimeoutExpired:
            harness.terminate()  # SIGTERM: the harness stops its servers and workers
            stdout, stderr = harness.communicate(timeout=30)
            pytest.fail(f"the harness ran over 50 s:\n{stderr[-3000:]}")
    assert harness.returncode == 0, stderr[-3000:]

    text = output.read_text()
    for section in SECTIONS:
        assert f"{section}\n{'-' * len(section)}\n" in text, section
    assert "--no-peers --quick" in text  # the exact command is recorded
    for row in ROWS:
        assert row in text, row
        assert row in stdout, row  # the printed summary has the same rows
    for verdict in ("met", "not measured"):
        assert verdict in stdout

    results = json.loads(raw.read_text())
    assert list(results["libraries"]) == ["jobs"]
    assert results["depth"] is None  # --quick
    jobs = results["libraries"]["jobs"]
    for body in ("incr", "noop"):
        assert set(jobs["drain"][body]) == {"1x3", "2x2"}
        assert set(results["ceiling"][body]) == {"1x3", "2x2"}
        for drain in jobs["drain"][body].values():
            assert drain["jobs"] == 150
            assert drain["rate"] > 0
    assert jobs["latency"]["samples"] == 5
    assert jobs["commands"]["jobs"] == 60
    assert {"queued", "completed"} <= set(jobs["memory"])
    assert {"nproc", "cpu"} <= set(results["machine"])
    assert "redis-server" in results["versions"]
