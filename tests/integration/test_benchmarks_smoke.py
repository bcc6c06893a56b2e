"""The benchmark harness runs end to end and reports every figure (never how fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._topologies import find_redis_cli

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"

SECTIONS = (
    "Machine and versions",
    "Targets for jobs",
    "All figures side by side",
    "Redis commands per job, by command (MONITOR)",
    "Queue depth (jobs only)",
    "Scale-out (jobs only): worker processes and cluster shards",
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
    # Scale-out: 1 versus 2 worker processes, the second way by the library's supervisor.
    "1 process x 3 threads (jobs_worker.py)",
    "2 processes x 2 threads, separate (jobs_worker.py)",
    "2 processes x 2 threads, one ``--processes 2`` supervisor",
)

CLUSTER_ROWS = (
    "(a) 1 queue, 1 process: one shard busy",
    "(b) 3 queues on 3 masters, 1 process each",
    "(c) control: 1 queue, 3 processes",
)


@pytest.mark.slow
def test_harness_reports_every_figure(redis_binary: str, tmp_path: Path) -> None:
    output, raw = tmp_path / "RESULTS.rst", tmp_path / "results.json"
    env = dict(os.environ, JOBS_REDIS_SERVER=redis_binary)
    # --quick skips the cluster drains; at this size they take a few seconds.
    cluster = find_redis_cli(redis_binary) is not None or bool(os.environ.get("CI"))
    with subprocess.Popen(
        [
            sys.executable, str(RUN), "--no-peers", "--quick",
            "--jobs", "150", "--threads", "3", "--threads-2p", "2", "--rounds", "2",
            "--latency-samples", "5", "--idle-seconds", "0.3", "--monitor-jobs", "60",
            "--cluster" if cluster else "--no-cluster",
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
    for row in ROWS + (CLUSTER_ROWS if cluster else ()):
        assert row in text, row
        assert row in stdout, row  # the printed summary has the same rows
    for verdict in ("met", "not measured"):
        assert verdict in stdout

    results = json.loads(raw.read_text())
    assert list(results["libraries"]) == ["jobs"]
    assert results["depth"] is None  # --quick
    jobs = results["libraries"]["jobs"]
    assert results["settings"]["rounds"] == 2
    for body in ("incr", "noop"):
        assert set(jobs["drain"][body]) == {"1x3", "2x2"}
        assert set(results["ceiling"][body]) == {"1x3", "2x2"}
        # Each figure is the median of its rounds; every round's is kept.
        assert all(len(rates) == 2 for rates in results["ceiling_rates"][body].values())
        # What the bare body costs redis-server, next to each library's figure (0 is
        # possible here: CPU times tick every 10 ms, and 150 jobs take less).
        assert set(results["ceiling_redis_cpu_us"][body]) == {"1x3", "2x2"}
        assert all(cpu >= 0 for cpu in results["ceiling_redis_cpu_us"][body].values())
        for drain in jobs["drain"][body].values():
            assert drain["jobs"] == 150
            assert drain["rate"] > 0
            assert len(drain["rates"]) == 2
            assert min(drain["rates"]) <= drain["rate"] <= max(drain["rates"])
    supervised = jobs["supervised"]["2x2"]
    assert supervised["jobs"] == 150
    assert len(supervised["rates"]) == 2
    assert supervised["rate"] > 0
    assert supervised["os_processes"] == 3  # the supervisor and its two workers
    assert supervised["exit_code"] == 0  # stopped by SIGTERM, cleanly
    assert supervised["leftover_children"] == 0
    assert "--processes 2 --workers 2" in jobs["supervised_command"]
    if cluster:
        drains = results["cluster"]
        assert len(set(drains["queues"].values())) == 3  # one queue per master
        for name, queues, processes in (("one", 1, 1), ("three", 3, 3), ("one_wide", 1, 3)):
            assert drains[name]["jobs"] == 150 * queues
            assert drains[name]["processes"] == processes
            assert drains[name]["rate"] > 0
            assert len(drains[name]["rates"]) == 3  # the drains take turns, 3 rounds
            assert len(drains[name]["shard_cpu_percent"]) == 3
    else:
        assert results["cluster"] is None
    assert results["failures"] == []
    assert jobs["latency"]["samples"] == 5
    assert jobs["commands"]["jobs"] == 60
    assert {"queued", "completed"} <= set(jobs["memory"])
    assert {"nproc", "cpu"} <= set(results["machine"])
    assert "redis-server" in results["versions"]


def test_script_costs_reports_every_figure(redis_binary: str) -> None:
    script = RUN.parent / "script_costs.py"
    env = dict(os.environ, JOBS_REDIS_SERVER=redis_binary)
    done = subprocess.run(
        [sys.executable, str(script), "--calls", "40", "--rounds", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in (
        "empty EVALSHA, 18 args",
        "HSET of 11 fields, inside a script",
        "enqueue_plain.lua prelude (",
        "one new job through enqueue.lua",
        "one new job through enqueue_plain.lua",
    ):
        assert figure in done.stdout, figure
