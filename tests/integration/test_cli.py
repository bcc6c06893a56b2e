"""``python -m jobs``: every subcommand and every error path, run as real subprocesses.

Each command runs as ``sys.executable -m jobs ...`` with ``REDIS_URL`` pointing at the
test's private server. Worker processes run a small application module written into the
test's directory (their working directory, which the CLI makes importable); they leave
their traces in Redis lists (``t:*``), and their log goes to a file the test polls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

import jobs
from tests.helpers import free_port, wait_until
from tests.integration._clients import make_client, unique_name, wait_for_status
from tests.integration.test_security import WORKER_ACL, acl_setuser

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import redis

APP = """
import os
import time

import redis

import jobs

registry = jobs.Registry()
store = redis.Redis.from_url(os.environ["REDIS_URL"])


@registry.job("echo")
def echo(ctx, payload):
    return payload


@registry.job("talk")
def talk(ctx, payload):
    ctx.logger.info("talking about %s", payload)
    return "talked"


@registry.job("sleep")
def sleep(ctx, payload):
    store.rpush("t:started", ctx.job.id)
    if not ctx.sleep(payload["seconds"]):
        store.rpush("t:interrupted", f"{ctx.job.id}:{ctx.cancel_reason}")
        ctx.raise_if_cancelled()
    return "slept"


def on_success(job):
    store.rpush("t:success", job.id)


pool_config = jobs.WorkerPoolConfig(success_handler=on_success)
not_a_registry = 42
"""

CRONS = """
import jobs

cron_jobs = [
    jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="echo", payload={"from": "cron"}),
]


def make_scheduler(client):
    scheduler = jobs.Scheduler(client, misfire_grace=0)
    for cron_job in cron_jobs:
        scheduler.register(cron_job)
    return scheduler


def not_a_scheduler(client):
    return "nope"
"""

#: Flags that keep a worker process quick to start, notice work and stop.
FAST = ["--lease", "1", "--poll-interval", "0.1", "--workers", "2"]
READY = "worker running"
COMMANDS = ["worker", "scheduler", "enqueue", "get", "cancel", "retry", "list", "purge"]
COMMANDS += ["stats", "workers", "demo"]


def _env(redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "JOBS_TRACEBACK")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def cli(
    *args: str, redis_url: str | None, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobs ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=_env(redis_url),
        cwd=cwd,
        timeout=30,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jobs: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP)
    (tmp_path / "crons.py").write_text(CRONS)
    (tmp_path / "broken.py").write_text("import this_module_does_not_exist_anywhere\n")
    (tmp_path / "raises.py").write_text("X = 1\nraise RuntimeError('boom at import')\n")
    return tmp_path


@pytest.fixture
def producer(redis_url: str) -> Iterator[jobs.Client]:
    with make_client(redis_url, name="default") as client:
        yield client


@contextmanager
def background(
    args: list[str], redis_url: str, cwd: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A long-running ``python -m jobs`` process with its output in a file; killed at exit."""
    log_path = cwd / f"cli-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs", *args],
            cwd=cwd,
            env=_env(redis_url),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C in the terminal reaches pytest only
        )
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_for_log(log_path: Path, text: str, timeout: float = 20) -> None:
    wait_until(
        lambda: text in log_path.read_text(),
        timeout=timeout,
        message=f"{text!r} never appeared in the log",
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    return proc.wait(timeout)


# -- help and parsing ----------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_level(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    proc = cli(*args, redis_url=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m jobs")
    assert "--redis-url" in proc.stdout
    assert "--queue" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["enqueue"], "required: TYPE"),
        (["enqueue", "t", "--priority", "high"], "invalid int value: 'high'"),
        (["enqueue", "t", "--priority", "5000"], "priority must be in -1000..1000"),
        (["enqueue", "t", "--delay", "-1"], "delay"),
        (["list", "--status", "lost"], "invalid choice: 'lost'"),
        (["list"], "required: --status"),
        (["worker"], "required: MODULE:REGISTRY"),
        (["worker", "no_colon"], "MODULE:ATTRIBUTE"),
        (["worker", "cliapp:registry", "--workers", "0"], "num_workers"),
        (["purge", "--status", "processing"], "processing"),
        (["get"], "required: JOB_ID"),
        (["stats", "--log-level", "loud"], "unrecognized arguments"),
        (["stats", "--redis-url", "http://example.com"], "redis://"),
        (["stats", "--queue", ""], "name"),
        (["stats", "--queue", "eu:default"], "name must not contain"),
        (["stats", "--prefix", "acme:eu"], "prefix must not contain"),
        (["worker", "cliapp:registry", "--prefix", "acme*"], "prefix must not contain"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], needle: str, redis_url: str, app_dir: Path
) -> None:
    assert_one_line_error(cli(*args, redis_url=redis_url, cwd=app_dir), 2, needle)


@pytest.mark.parametrize("payload", ["{bad", "[1, 2", "not json", "{'single': 'quotes'}"])
def test_bad_json_payload_exits_2_with_one_line(payload: str, redis_url: str) -> None:
    proc = cli("enqueue", "echo", payload, redis_url=redis_url)
    assert_one_line_error(proc, 2, "JSON_PAYLOAD is not valid JSON")


def test_bad_json_metadata_exits_2(redis_url: str) -> None:
    proc = cli("enqueue", "echo", "{}", "--metadata", "{x", redis_url=redis_url)
    assert_one_line_error(proc, 2, "--metadata is not valid JSON")


def test_metadata_must_be_an_object(redis_url: str) -> None:
    proc = cli("enqueue", "echo", "{}", "--metadata", "[1]", redis_url=redis_url)
    assert_one_line_error(proc, 2, "metadata")


@pytest.mark.parametrize("command", ["get", "cancel", "retry"])
def test_unknown_job_id_exits_1_with_one_line(command: str, redis_url: str) -> None:
    proc = cli(command, "no-such-job", redis_url=redis_url)
    assert_one_line_error(proc, 1, "no job 'no-such-job'")


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["stats", "--watch", "--count", "1"],
        ["get", "abc"],
        ["enqueue", "echo", "{}"],
        ["cancel", "abc"],
        ["retry", "abc"],
        ["list", "--status", "failed"],
        ["purge", "--status", "failed"],
        ["workers"],
        ["worker", "cliapp:registry"],
        ["scheduler", "crons:cron_jobs"],
        ["demo"],
    ],
)
def test_unreachable_server_exits_1_naming_it(args: list[str], app_dir: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = cli(*args, "--redis-url", url, redis_url=url, cwd=app_dir)
    assert_one_line_error(proc, 1, f"127.0.0.1:{port}")


def test_redis_url_comes_from_the_environment(app_dir: Path) -> None:
    port = free_port()
    proc = cli("stats", redis_url=f"redis://127.0.0.1:{port}/0", cwd=app_dir)
    assert_one_line_error(proc, 1, f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("spec", "code", "needle"),
    [
        ("nowhere:registry", 1, "no module named 'nowhere'"),
        ("nowhere.tasks:registry", 1, "no module named 'nowhere'"),
        ("cliapp.tasks:registry", 1, "no module named 'cliapp.tasks'"),
        ("broken:registry", 1, "this_module_does_not_exist_anywhere"),
        ("raises:registry", 1, "RuntimeError: boom at import"),
        ("cliapp:missing", 1, "has no attribute 'missing'"),
        ("cliapp:not_a_registry", 1, "not a jobs.Registry"),
        (":registry", 2, "MODULE:ATTRIBUTE"),
    ],
)
def test_import_errors_in_module_registry_exit_with_one_line(
    spec: str, code: int, needle: str, redis_url: str, app_dir: Path
) -> None:
    proc = cli("worker", spec, redis_url=redis_url, cwd=app_dir)
    assert_one_line_error(proc, code, needle)


def test_import_error_names_the_line(redis_url: str, app_dir: Path) -> None:
    proc = cli("worker", "raises:registry", redis_url=redis_url, cwd=app_dir)
    assert_one_line_error(proc, 1, "raises.py:2")


# -- producer and inspection commands -------------------------------------------------


def test_enqueue_prints_the_id_alone_on_the_last_line(
    redis_url: str, producer: jobs.Client
) -> None:
    proc = cli("enqueue", "echo", '{"to": "ada"}', redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    job = producer.get(job_id)
    assert (job.type, job.payload, job.status) == ("echo", {"to": "ada"}, jobs.JobStatus.PENDING)


def test_enqueue_options(redis_url: str, producer: jobs.Client) -> None:
    proc = cli(
        "enqueue", "echo", "[1, 2]",
        "--priority", "7", "--delay", "60", "--max-retries", "1",
        "--timeout", "none", "--metadata", '{"user": 3}',
        redis_url=redis_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = producer.get(proc.stdout.split()[-1])
    assert job.status is jobs.JobStatus.SCHEDULED
    assert (job.priority, job.max_retries, job.timeout) == (7, 1, None)
    assert dict(job.metadata) == {"user": 3}
    assert job.payload == [1, 2]


def test_enqueue_without_payload_and_from_stdin(redis_url: str, producer: jobs.Client) -> None:
    bare = cli("enqueue", "echo", redis_url=redis_url)
    piped = cli("enqueue", "echo", "-", redis_url=redis_url, stdin='{"from": "stdin"}')
    assert producer.get(bare.stdout.split()[-1]).payload is None
    assert producer.get(piped.stdout.split()[-1]).payload == {"from": "stdin"}


def test_options_may_come_before_or_after_the_subcommand(redis_url: str) -> None:
    before = cli("--queue", "other", "enqueue", "echo", redis_url=redis_url)
    after = cli("enqueue", "echo", "--queue", "other", redis_url=redis_url)
    with make_client(redis_url, name="other") as client:
        assert client.stats().pending_jobs == 2
        for proc in (before, after):
            assert client.get(proc.stdout.split()[-1]).queue == "other"
    with make_client(redis_url, name="default") as client:
        assert client.stats().total_jobs == 0


def test_prefix_option(redis_url: str, redis_client: redis.Redis) -> None:
    proc = cli("--prefix", "tenant", "enqueue", "echo", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    assert redis_client.exists("{tenant:default}:job:" + proc.stdout.split()[-1])


def test_get_prints_field_lines_and_json(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("echo", lambda ctx, payload: {"echoed": payload})
    with make_client(redis_url, registry, name="default") as client:
        job_id = client.enqueue("echo", {"n": 1})
        wait_for_status(client, job_id, jobs.JobStatus.COMPLETED)
    proc = cli("get", job_id, redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert fields["status"] == "completed"
    assert fields["attempts"] == "1"
    assert fields["result"] == '{"echoed": {"n": 1}}'
    assert fields["error"] == "-"
    for stamp in ("created_at", "started_at", "completed_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields[stamp]), stamp
    data = json.loads(cli("get", job_id, "--json", redis_url=redis_url).stdout)
    assert data["status"] == "completed"
    assert data["result"] == {"echoed": {"n": 1}}
    assert data["completed_at"] == fields["completed_at"]


def test_get_shows_the_error_of_a_failed_job(redis_url: str) -> None:
    def fail(ctx: jobs.JobContext, payload: object) -> None:
        raise jobs.PermanentError("card declined\nsecond line")

    registry = jobs.Registry()
    registry.register_func("charge", fail)
    with make_client(redis_url, registry, name="default") as client:
        job_id = client.enqueue("charge")
        wait_for_status(client, job_id, jobs.JobStatus.FAILED)
    proc = cli("get", job_id, redis_url=redis_url)
    assert "error: PermanentError: card declined\\nsecond line" in proc.stdout.splitlines()
    assert "status: failed" in proc.stdout.splitlines()


def test_cancel(redis_url: str, producer: jobs.Client) -> None:
    job_id = producer.enqueue("echo")
    proc = cli("cancel", job_id, redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cancelled {job_id}"
    assert producer.get(job_id).status is jobs.JobStatus.CANCELLED
    again = cli("cancel", job_id, redis_url=redis_url)
    assert_one_line_error(again, 1, "already cancelled")


def test_retry_puts_a_cancelled_job_back(redis_url: str, producer: jobs.Client) -> None:
    job_id = producer.enqueue("echo")
    producer.cancel(job_id)
    proc = cli("retry", job_id, redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    assert job_id in proc.stdout
    assert producer.get(job_id).status is jobs.JobStatus.PENDING
    assert_one_line_error(cli("retry", job_id, redis_url=redis_url), 1, "is pending")


def test_list_in_run_order_with_limit_offset_and_json(
    redis_url: str, producer: jobs.Client
) -> None:
    low = producer.enqueue("echo", 1)
    high = producer.enqueue("echo", 2, jobs.JobConfig(priority=5))
    proc = cli("list", "--status", "pending", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["ID", "TYPE", "STATUS"]
    assert [row.split()[0] for row in rows] == [high, low]
    assert rows[0].split()[1:4] == ["echo", "pending", "5"]
    page = cli("list", "--status", "pending", "--limit", "1", "--offset", "1", redis_url=redis_url)
    assert [row.split()[0] for row in page.stdout.splitlines()[1:]] == [low]
    data = json.loads(cli("list", "--status", "pending", "--json", redis_url=redis_url).stdout)
    assert [job["id"] for job in data] == [high, low]
    empty = cli("list", "--status", "failed", redis_url=redis_url)
    assert empty.returncode == 0
    assert empty.stdout.strip() == "no failed jobs in queue 'default'"
    assert json.loads(cli("list", "--status", "failed", "--json", redis_url=redis_url).stdout) == []


def test_get_list_and_stats_show_waiting_jobs(redis_url: str, producer: jobs.Client) -> None:
    first = producer.enqueue("echo", 1)
    waiting = producer.enqueue("echo", 2, jobs.JobConfig(depends_on=[first]))
    many = producer.enqueue("echo", 3, jobs.JobConfig(depends_on=[first, waiting]))
    got = cli("get", waiting, redis_url=redis_url)
    assert got.returncode == 0, got.stderr
    fields = dict(line.split(": ", 1) for line in got.stdout.splitlines() if ": " in line)
    assert (fields["status"], fields["depends_on"]) == ("waiting", first)
    data = json.loads(cli("get", many, "--json", redis_url=redis_url).stdout)
    assert (data["status"], data["depends_on"]) == ("waiting", [first, waiting])
    listed = cli("list", "--status", "waiting", redis_url=redis_url)
    assert [row.split()[:3] for row in listed.stdout.splitlines()[1:]] == [
        [waiting, "echo", "waiting"],
        [many, "echo", "waiting"],
    ]
    stats = dict(
        line.split(": ", 1) for line in cli("stats", redis_url=redis_url).stdout.splitlines()
    )
    assert (stats["waiting_jobs"], stats["pending_jobs"]) == ("2", "1")
    # Cancelling the dependency cancels both, each naming the job it waited for.
    assert cli("cancel", first, redis_url=redis_url).returncode == 0
    cancelled = json.loads(cli("get", many, "--json", redis_url=redis_url).stdout)
    assert cancelled["status"] == "cancelled"
    # Breadth first: the dependency cancelled by hand names both of its dependents.
    assert cancelled["error"] == f"dependency {first} was cancelled"


def test_purge(redis_url: str, producer: jobs.Client) -> None:
    ids = [producer.enqueue("echo") for _ in range(3)]
    for job_id in ids[:2]:
        producer.cancel(job_id)
    proc = cli("purge", "--status", "cancelled", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "deleted 2 cancelled jobs"
    assert producer.list_jobs("cancelled") == []
    assert producer.get(ids[2]).status is jobs.JobStatus.PENDING


def test_stats_prints_every_field_one_per_line(redis_url: str, producer: jobs.Client) -> None:
    producer.enqueue("echo")
    producer.enqueue("echo", config=jobs.JobConfig(delay=60))
    proc = cli("stats", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert list(fields) == [f.name for f in jobs.QueueStats.__attrs_attrs__]
    assert (fields["total_jobs"], fields["pending_jobs"], fields["scheduled_jobs"]) == (
        "2",
        "1",
        "1",
    )
    assert fields["last_processed"] == "-"
    data = json.loads(cli("stats", "--json", redis_url=redis_url).stdout)
    assert data["total_jobs"] == 2
    assert data["last_processed"] is None


def test_stats_watch_prints_plain_lines_when_not_a_tty(redis_url: str) -> None:
    proc = cli("stats", "--watch", "--count", "3", "--interval", "0.05", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("time=") and " total_jobs=0 " in line for line in lines)
    assert all(
        line.endswith(" completed_per_minute=0 failed_per_minute=0 cancelled_per_minute=0")
        for line in lines
    )
    assert "\x1b" not in proc.stdout
    as_json = cli(
        "stats", "--watch", "--json", "--count", "2", "--interval", "0.05", redis_url=redis_url
    )
    assert [json.loads(line)["total_jobs"] for line in as_json.stdout.splitlines()] == [0, 0]
    assert [json.loads(line)["failed_per_minute"] for line in as_json.stdout.splitlines()] == [0, 0]


def run_in_pty(args: list[str], redis_url: str, timeout: float = 30) -> tuple[int, str]:
    """Run ``python -m jobs ARGS`` with a terminal as stdout; its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=_env(redis_url),
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, output.decode("utf-8", "replace")


def test_stats_watch_refreshes_in_place_on_a_tty(redis_url: str) -> None:
    code, output = run_in_pty(["stats", "--watch", "--count", "2", "--interval", "0.05"], redis_url)
    assert code == 0, output
    assert output.count("total_jobs: 0") == 2
    # The second block moves the cursor back up over the first instead of scrolling.
    lines_per_block = 2 + len(jobs.QueueStats.__attrs_attrs__)  # title, counts, rates
    assert output.count("per minute (last 5 min): enqueued 0  completed 0") == 2
    assert f"\x1b[{lines_per_block}F" in output


def test_workers_lists_live_pools(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("echo", lambda ctx, payload: payload)
    with make_client(redis_url, registry, name="default"):
        wait_until(lambda: cli("workers", redis_url=redis_url).stdout.count("\n") == 2)
        proc = cli("workers", redis_url=redis_url)
        data = json.loads(cli("workers", "--json", redis_url=redis_url).stdout)
    assert proc.stdout.splitlines()[0].split()[:3] == ["ID", "HOST", "PID"]
    assert str(os.getpid()) in proc.stdout.splitlines()[1].split()
    assert [w["pid"] for w in data] == [os.getpid()]
    assert data[0]["num_workers"] == 2
    assert (
        cli("workers", redis_url=redis_url).stdout.strip()
        == "no live worker pools on queue 'default'"
    )


# -- the worker ------------------------------------------------------------------------


def test_worker_runs_jobs_and_stops_on_sigterm_with_exit_0(
    redis_url: str, app_dir: Path, producer: jobs.Client
) -> None:
    with background(["worker", "cliapp:registry", *FAST], redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = cli("enqueue", "echo", '{"hello": "world"}', redis_url=redis_url).stdout.split()[
            -1
        ]
        job = wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED)
        assert job.result == {"hello": "world"}
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    text = log.read_text()
    assert "SIGTERM received: stopping gracefully" in text
    assert "worker stopped cleanly" in text
    assert "Traceback" not in text
    assert producer.workers() == []


def test_worker_sigterm_mid_job_lets_it_complete(
    redis_url: str, app_dir: Path, producer: jobs.Client, redis_client: redis.Redis
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--shutdown-timeout", "20"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("sleep", {"seconds": 1})
        wait_until(lambda: redis_client.lrange("t:started", 0, -1) == [job_id.encode()])
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    job = producer.get(job_id)
    assert (job.status, job.result, job.attempts) == (jobs.JobStatus.COMPLETED, "slept", 1)


def test_worker_sigterm_mid_job_returns_it_to_the_queue(
    redis_url: str, app_dir: Path, producer: jobs.Client, redis_client: redis.Redis
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--shutdown-timeout", "0.2"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("sleep", {"seconds": 30})
        wait_until(lambda: redis_client.llen("t:started") == 1)
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    job = producer.get(job_id)
    assert job.status is jobs.JobStatus.PENDING
    assert redis_client.lrange("t:interrupted", 0, -1) == [f"{job_id}:shutdown".encode()]
    assert "1 interrupted jobs returned to the queue" in log.read_text()


def _can_hurry() -> bool:
    import inspect

    return "timeout" in inspect.signature(jobs.Client.stop).parameters


def test_worker_second_sigint_stops_at_once(
    redis_url: str, app_dir: Path, producer: jobs.Client, redis_client: redis.Redis
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--shutdown-timeout", "60"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("sleep", {"seconds": 60})
        wait_until(lambda: redis_client.llen("t:started") == 1)
        proc.send_signal(signal.SIGINT)
        wait_for_log(log, "SIGINT received")
        proc.send_signal(signal.SIGINT)
        code = finish(proc, timeout=10)  # far below the 60 s shutdown timeout
    text = log.read_text()
    assert "SIGINT again" in text
    assert "Traceback" not in text
    # With Client.stop(timeout=...) the job is handed back at once and the stop is clean;
    # without it the process exits at once and the job comes back when its lease expires.
    if _can_hurry():
        assert code == 0, text
        job = producer.get(job_id)
        assert (job.status, job.attempts) == (jobs.JobStatus.PENDING, 0)
    else:
        assert code == 1, text

        def reaped() -> bool:
            producer.queue.reap()  # what any live worker's heartbeat does
            return producer.get(job_id).status is jobs.JobStatus.PENDING

        wait_until(reaped, timeout=10)


def test_worker_json_logs(redis_url: str, app_dir: Path, producer: jobs.Client) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--log-format", "json"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("talk", "the weather")
        wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED)
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    talk = next(r for r in records if r["message"] == "talking about the weather")
    assert talk["logger"] == "jobs.job"
    assert talk["level"] == "INFO"
    assert (talk["job_id"], talk["job_type"], talk["attempt"], talk["queue"]) == (
        job_id, "talk", 1, "default",
    )  # fmt: skip


def test_worker_text_logs_carry_the_structured_fields(
    redis_url: str, app_dir: Path, producer: jobs.Client
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--log-level", "DEBUG"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("talk", "rain")
        wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED)
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0
    line = next(ln for ln in log.read_text().splitlines() if "talking about rain" in ln)
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO jobs\.job: talking about rain", line
    )
    assert f"job_id={job_id}" in line
    assert "job_type=talk attempt=1" in line
    assert " DEBUG " in log.read_text()


def test_worker_pool_config_brings_hooks(
    redis_url: str, app_dir: Path, producer: jobs.Client, redis_client: redis.Redis
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--pool-config", "cliapp:pool_config"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        job_id = producer.enqueue("echo", 1)
        wait_until(lambda: redis_client.lrange("t:success", 0, -1) == [job_id.encode()])
        [info] = producer.workers()
        assert info.num_workers == 2  # --workers overrides the loaded config
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0


def test_worker_with_scheduler(redis_url: str, app_dir: Path, producer: jobs.Client) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--scheduler", "crons:cron_jobs"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_for_log(log, READY)
        wait_until(lambda: producer.stats().completed_jobs >= 2, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    done = producer.list_jobs("completed")
    assert {job.payload["from"] for job in done} == {"cron"}


@pytest.mark.parametrize("spec", ["crons:cron_jobs", "crons:make_scheduler"])
def test_scheduler_command(spec: str, redis_url: str, app_dir: Path, producer: jobs.Client) -> None:
    with background(["scheduler", spec], redis_url, app_dir) as (proc, log):
        wait_for_log(log, "scheduler running")
        wait_until(lambda: producer.stats().pending_jobs >= 2, timeout=10)
        proc.send_signal(signal.SIGINT)
        assert finish(proc) == 0, log.read_text()
    assert "scheduler stopped cleanly" in log.read_text()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("cliapp:registry", "is a Registry: expected a jobs.Scheduler"),
        ("crons:not_a_scheduler", "crons:not_a_scheduler(client)' is a str, not a jobs.Scheduler"),
        ("crons:nothing", "has no attribute 'nothing'"),
    ],
)
def test_scheduler_command_rejects_what_is_not_a_scheduler(
    spec: str, needle: str, redis_url: str, app_dir: Path
) -> None:
    proc = cli("scheduler", spec, redis_url=redis_url, cwd=app_dir)
    assert_one_line_error(proc, 1, needle)


def test_json_log_formatter_keeps_a_traceback_on_one_line() -> None:
    import logging

    from jobs.cli._logging import JsonFormatter, TextFormatter

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.getLogger("jobs.worker").makeRecord(
            "jobs.worker", logging.ERROR, __file__, 1, "job %s failed", ("j1",),
            sys.exc_info(), extra={"job_id": "j1", "duration_ms": 1.5, "custom": "x"},
        )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert (data["level"], data["logger"], data["message"]) == (
        "ERROR",
        "jobs.worker",
        "job j1 failed",
    )
    assert (data["job_id"], data["duration_ms"], data["custom"]) == ("j1", 1.5, "x")
    assert data["exc_info"].startswith("Traceback") and "ValueError: bad" in data["exc_info"]
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith("job j1 failed  job_id=j1 duration_ms=1.5 custom=x")
    assert "ValueError: bad" in text


def test_main_in_process_returns_exit_codes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.cli import main

    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_jobs"] == 0
    assert main(["get", "nope"]) == 1
    assert main(["enqueue"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "jobs: error: no job 'nope' in queue 'default'",
        "jobs: error: the following arguments are required: TYPE "
        "(see 'python -m jobs enqueue --help')",
    ]


def test_worker_processes_are_supervised(
    redis_url: str, app_dir: Path, producer: jobs.Client, redis_client: redis.Redis
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--processes", "2"]
    with background(args, redis_url, app_dir) as (proc, log):

        def pids() -> set[int]:
            return {w.pid for w in producer.workers()}

        wait_until(lambda: len(pids()) == 2, timeout=20, message=log.read_text())
        victim = min(pids())
        os.kill(victim, signal.SIGKILL)
        # The supervisor starts a replacement; the dead one's record expires.
        wait_until(
            lambda: len(pids()) == 2 and victim not in pids(),
            timeout=20,
            message=log.read_text(),
        )
        job_ids = producer.enqueue_many("echo", list(range(20)))
        for job_id in job_ids:
            wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED)
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()
    text = log.read_text()
    assert "restarting it" in text and "all worker processes stopped" in text
    # Both children stopped gracefully and removed their records.
    assert producer.workers() == []


def test_worker_processes_stop_when_their_supervisor_dies(
    redis_url: str, app_dir: Path, producer: jobs.Client
) -> None:
    args = ["worker", "cliapp:registry", *FAST, "--processes", "2"]
    with background(args, redis_url, app_dir) as (proc, log):
        wait_until(lambda: len(producer.workers()) == 2, timeout=20)
        proc.kill()  # no chance to stop its children: their stdin closes all the same
        proc.wait()
        wait_until(lambda: producer.workers() == [], timeout=20, message=log.read_text())


def test_processes_must_be_positive(redis_url: str, app_dir: Path) -> None:
    proc = cli("worker", "cliapp:registry", "--processes", "0", redis_url=redis_url, cwd=app_dir)
    assert_one_line_error(proc, 2, "--processes must be at least 1")


# -- the supervisor's process tree ---------------------------------------------------


def _children_of() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # it exited meanwhile
        if fields[0] != "Z":
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``: supervised children run in sessions of their own,
    so killing the top's process group would miss them."""
    tree, found, todo = _children_of(), [], [pid]
    while todo:
        below = tree.get(todo.pop(), [])
        found += below
        todo += below
    return found


@contextmanager
def process_tree(
    args: list[str], env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[str]]:
    """``python -m jobs ARGS``, with every process below it SIGKILLed at exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        # Freeze the whole tree first (a stopped process forks nothing and, alive, keeps
        # its children in the tree), then kill every process of it.
        frozen = [proc.pid]
        while True:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            more = [pid for pid in descendants(proc.pid) if pid not in frozen]
            if not more:
                break
            frozen += more
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.parametrize("spelling", [["--proc", "1"], ["--proc=1"], ["--process", "1"]])
def test_an_abbreviated_processes_option_is_refused_and_forks_nothing(
    spelling: list[str], redis_url: str, app_dir: Path
) -> None:
    # It once made every child a supervisor again: an unbounded chain of processes.
    args = ["worker", "cliapp:registry", "--queue", unique_name(), *spelling]
    with process_tree(args, _env(redis_url), app_dir) as proc:
        out, err = proc.communicate(timeout=20)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    assert_one_line_error(result, 2, "unrecognized arguments", spelling[0])


def test_a_supervised_worker_cannot_supervise(redis_url: str, app_dir: Path) -> None:
    env = {**_env(redis_url), "JOBS_SUPERVISED_BY": "1"}
    args = ["worker", "cliapp:registry", "--queue", unique_name(), "--processes", "1"]
    with process_tree(args, env, app_dir) as proc:
        out, err = proc.communicate(timeout=20)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    assert_one_line_error(result, 2, "started by a supervisor cannot supervise")


def test_the_supervised_tree_is_the_supervisor_and_n_workers(redis_url: str, app_dir: Path) -> None:
    name = unique_name()
    args = ["worker", "cliapp:registry", *FAST, "--queue", name, "--processes", "2"]
    with (
        make_client(redis_url, name=name) as watcher,
        process_tree(args, _env(redis_url), app_dir) as proc,
    ):
        wait_until(lambda: len(watcher.workers()) == 2, timeout=30)
        below = descendants(proc.pid)
        # Exactly two children, each a worker: none supervises a tree of its own.
        assert sorted(below) == sorted(w.pid for w in watcher.workers()), below
        for pid in below:
            with open(f"/proc/{pid}/cmdline") as cmdline:
                argv = cmdline.read().split("\0")
            assert not [a for a in argv if a.startswith("--proc")], argv
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in below), timeout=10)
        assert watcher.workers() == []


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://admin:Sup3rS3cret@[10.0.0.1:7000",
        "redis://10.0.0.1:6379/0?password=Sup3rS3cret&socket_timeout=x",
        "redis+sentinel://s1/m?sentinel_password=Sup3rS3cret&socket_timeout=5s",
    ],
)
def test_a_bad_redis_url_is_one_line_without_its_password(url: str) -> None:
    proc = cli("stats", "--redis-url", url, redis_url=None)
    assert_one_line_error(proc, 2, "***")
    assert "Sup3rS3cret" not in proc.stderr


# -- control characters from jobs ----------------------------------------------------

#: A handler's error as an attacker upstream could shape it: retitle the window (OSC),
#: clear the screen (ESC [ and C1 CSI), reorder the line (RLO), and forge a log line.
HOSTILE = (
    "upstream said: \x1b]0;pwned\x07\x1b[2J\x9b31m\u202eFAKE\r\n"
    "2026-01-01 00:00:00.000 INFO jobs.worker: job 42 completed  queue=x"
)
#: What a terminal acts on instead of showing: no output of the CLI may hold one.
TERMINAL_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _failed_hostile_job(redis_url: str, name: str) -> str:
    def fail(ctx: jobs.JobContext, payload: object) -> None:
        raise jobs.PermanentError(HOSTILE)

    registry = jobs.Registry()
    registry.register_func("fetch\x1b[2J", fail)
    with make_client(redis_url, registry, name=name) as client:
        job_id = client.enqueue("fetch\x1b[2J", {"body": "\x9b2J"})
        wait_for_status(client, job_id, jobs.JobStatus.FAILED)
    return job_id


def test_get_and_list_never_print_control_characters(redis_url: str) -> None:
    name = unique_name()
    job_id = _failed_hostile_job(redis_url, name)
    for args in (["get", job_id], ["list", "--status", "failed"]):
        for json_flag in ([], ["--json"]):
            proc = cli(*args, *json_flag, "--queue", name, redis_url=redis_url)
            assert proc.returncode == 0, proc.stderr
            assert not TERMINAL_CONTROLS.search(proc.stdout), (args, json_flag, proc.stdout)
            if json_flag:
                # Escaped as JSON escapes: the same data comes back.
                data = json.loads(proc.stdout)
                job = data if isinstance(data, dict) else data[0]
                assert (job["error"], job["type"]) == (f"PermanentError: {HOSTILE}", "fetch\x1b[2J")
                assert job["payload"] == {"body": "\x9b2J"}
    text = cli("get", job_id, "--queue", name, redis_url=redis_url).stdout
    assert "error: PermanentError: upstream said: \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in text
    assert not [line for line in text.splitlines() if line.startswith("2026-01-01")]


def test_text_log_lines_cannot_be_forged_by_a_job(redis_url: str, app_dir: Path) -> None:
    from jobs.cli._logging import TextFormatter

    name = unique_name()
    _failed_hostile_job(redis_url, name)
    try:
        raise jobs.PermanentError(HOSTILE)
    except jobs.PermanentError as exc:
        record = logging.getLogger("jobs.worker").makeRecord(
            "jobs.worker", logging.ERROR, __file__, 1, "job %s failed for good: %s",
            ("j1", str(exc)), sys.exc_info(), extra={"job_type": "fetch\x1b[2J\nx"},
        )  # fmt: skip
    text = TextFormatter().format(record)
    assert not TERMINAL_CONTROLS.search(text), text
    lines = text.splitlines()
    # One record: only its first line starts at the margin; the traceback is indented.
    assert [line for line in lines if not line.startswith(" ")] == lines[:1]
    assert lines[0].endswith("job_type=fetch\\x1b[2J\\nx")
    assert "\\x1b]0;pwned\\x07" in lines[0] and "\\r\\n2026-01-01" in lines[0]


# -- Redis users, and what the command line names ------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["worker", "cliapp:registry"], "refused the credentials"),
        (["worker", "cliapp:registry", "--processes", "2"], "refused the credentials"),
        (["scheduler", "crons:cron_jobs"], "refused the credentials"),
    ],
)
def test_a_wrong_password_is_said_to_be_refused(
    args: list[str], needle: str, redis_client: redis.Redis, redis_url: str, app_dir: Path
) -> None:
    user = unique_name("user")
    acl_setuser(redis_client, user, "right", WORKER_ACL)
    url = redis_url.replace("redis://", f"redis://{user}:wrong@")
    proc = cli(*args, "--redis-url", url, redis_url=url, cwd=app_dir)
    assert_one_line_error(proc, 1, needle)
    assert "cannot reach" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "cliapp:registry"],
        ["worker", "cliapp:registry", "--processes", "2"],
        ["scheduler", "crons:cron_jobs"],
    ],
)
def test_a_user_without_a_needed_command_fails_at_start(
    args: list[str], redis_client: redis.Redis, redis_url: str, app_dir: Path
) -> None:
    # It once started, then retried NOPERM for ever at its first fetch.
    user = unique_name("user")
    acl_setuser(redis_client, user, "pw", " ".join(WORKER_ACL.split()).replace(" +zpopmin", ""))
    url = redis_url.replace("redis://", f"redis://{user}:pw@")
    proc = cli(*args, "--redis-url", url, redis_url=url, cwd=app_dir)
    assert_one_line_error(proc, 1, "lacks what queue 'default' (prefix 'jobs') needs: +zpopmin")


def test_a_least_privilege_user_passes_the_start_check(
    redis_client: redis.Redis, redis_url: str, app_dir: Path, producer: jobs.Client
) -> None:
    user = unique_name("user")
    acl_setuser(redis_client, user, "pw", WORKER_ACL)
    url = redis_url.replace("redis://", f"redis://{user}:pw@")
    with background(["worker", "cliapp:registry", *FAST, "--redis-url", url], url, app_dir) as (
        proc,
        log,
    ):
        wait_for_log(log, READY)
        job_id = producer.enqueue("echo", {"n": 1})
        assert wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED).result == {"n": 1}
        proc.send_signal(signal.SIGTERM)
        assert finish(proc) == 0, log.read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stats", "--watch", "--interval", "-1"], "--interval: must be a number of seconds > 0"),
        (["stats", "--watch", "--interval", "0"], "--interval: must be a number of seconds > 0"),
        (["stats", "--watch", "--interval", "nan"], "--interval: must be a number of seconds"),
        (["stats", "--watch", "--count", "0"], "--count: must be a whole number >= 1"),
    ],
)
def test_watch_interval_and_count_are_checked(args: list[str], needle: str, redis_url: str) -> None:
    # -1 crashed in time.sleep; 0 redrew as fast as Redis answered.
    assert_one_line_error(cli(*args, redis_url=redis_url), 2, needle)


BOUND_SCHEDULER = """
import os

import jobs

queue = jobs.RedisQueue.from_url(os.environ["REDIS_URL"], name="reports")
scheduler = jobs.Scheduler(queue)
scheduler.register(jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="echo"))
"""


@pytest.mark.parametrize("command", [["scheduler"], ["worker", "cliapp:registry", "--scheduler"]])
def test_a_scheduler_bound_to_another_queue_is_refused(
    command: list[str], redis_url: str, app_dir: Path
) -> None:
    # It once ran on its own queue while the log named the command line's.
    (app_dir / "bound.py").write_text(BOUND_SCHEDULER)
    proc = cli(*command, "bound:scheduler", "--queue", "emails", redis_url=redis_url, cwd=app_dir)
    assert_one_line_error(
        proc, 2, "bound to queue 'reports'", "names queue 'emails'", "function(client)"
    )
    with background([*command, "bound:scheduler", "--queue", "reports"], redis_url, app_dir) as (
        proc2,
        log,
    ):
        wait_for_log(log, "scheduler started")
        proc2.send_signal(signal.SIGTERM)
        assert finish(proc2) == 0, log.read_text()


def _fail_for_good(redis_url: str, queue: str, counts: dict[str, int]) -> list[str]:
    """Run ``counts[type]`` jobs of each type to failure on ``queue``; their ids."""

    def boom(ctx: jobs.JobContext, payload: object) -> object:
        raise ValueError("bad <input>")

    registry = jobs.Registry()
    for job_type in counts:
        registry.register_func(job_type, boom)
    once = jobs.JobConfig(max_retries=0)
    with make_client(redis_url, registry, name=queue) as client:
        ids = [i for t, n in counts.items() for i in client.enqueue_many(t, range(n), once)]
        client.wait_all(ids, timeout=20)
    return ids


def test_get_shows_the_traceback_and_retry_all_failed_by_type(
    redis_url: str, producer: jobs.Client
) -> None:
    ids = _fail_for_good(redis_url, producer.queue.name, {"a": 3, "b": 2})
    proc = cli("get", ids[0], redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "error: ValueError: bad <input>" in lines
    at = lines.index("traceback:")
    assert lines[at + 1].startswith("  Traceback (most recent call last):")
    assert any("raise ValueError" in line for line in lines[at:])
    data = json.loads(cli("get", ids[0], "--json", redis_url=redis_url).stdout)
    assert "raise ValueError" in data["traceback"]

    proc = cli("retry", "--all-failed", "--type", "b", redis_url=redis_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "retrying 2 failed b jobs"
    assert {producer.get(i).status for i in ids[3:]} == {jobs.JobStatus.PENDING}
    proc = cli("retry", "--all-failed", redis_url=redis_url)
    assert proc.stdout.strip() == "retrying 3 failed jobs"
    assert_one_line_error(cli("retry", redis_url=redis_url), 2, "JOB_ID or --all-failed")
    assert_one_line_error(cli("retry", ids[0], "--type", "a", redis_url=redis_url), 2, "--type")


def test_get_shows_progress(redis_url: str, producer: jobs.Client) -> None:
    release = threading.Event()

    def slow(ctx: jobs.JobContext, payload: object) -> object:
        ctx.progress(0.4, "4 of 10")
        release.wait(20)
        return None

    registry = jobs.Registry()
    registry.register_func("slow", slow)
    with make_client(redis_url, registry, name=producer.queue.name) as client:
        job_id = client.enqueue("slow")
        wait_until(lambda: client.get(job_id).progress is not None, 5)
        proc = cli("get", job_id, redis_url=redis_url)
        release.set()
    assert "progress: 40% 4 of 10" in proc.stdout.splitlines()
