"""Per-process worker metrics: ``python -m jobs worker --metrics-port``, scraped for real.

The worker runs as a real subprocess on an application module written into the test's
directory; the test enqueues real jobs, scrapes ``/metrics`` over HTTP and parses it
with ``prometheus_client.parser``. In-process tests cover `WorkerMetrics` as a pool's
``events`` and an observer that raises.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

import jobs
from jobs.worker import AttemptResult, Interruption, WorkerEvents
from tests.helpers import wait_until
from tests.integration._clients import make_client, wait_for_status
from tests.integration.test_cli import READY, app_dir, background, cli, wait_for_log

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from jobs.metrics import WorkerMetrics  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["app_dir"]  # the fixture, used here by name

APP = """
import jobs

registry = jobs.Registry()


@registry.job("ok")
def ok(ctx, payload):
    return payload


@registry.job("boom", max_retries=3)
def boom(ctx, payload):
    raise jobs.PermanentError("boom")


@registry.job("flaky", max_retries=1, retry_backoff=jobs.NoBackoff())
def flaky(ctx, payload):
    if ctx.job.attempts == 1:
        raise RuntimeError("first attempt fails")
    return "second time lucky"


@registry.job("slow", max_retries=0, timeout=0.3)
def slow(ctx, payload):
    ctx.sleep(30)


@registry.job("hang", max_retries=0)
def hang(ctx, payload):
    ctx.sleep(30)
"""

Samples = dict[tuple[str, str, str], float]


def _scrape(port: int) -> Samples:
    """GET /metrics and parse it: {(sample name, queue, type): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            key = (sample.name, sample.labels.get("queue", ""), sample.labels.get("type", ""))
            samples[key] = sample.value
    return samples


def _scrape_when_up(port: int) -> Samples:
    def attempt() -> Samples:
        try:
            return _scrape(port)
        except (urllib.error.URLError, ConnectionError):
            return {}  # not listening yet

    return wait_until(attempt, timeout=20, message=f"nothing serves /metrics on {port}")


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (bound together, then released)."""
    while True:
        socks: list[socket.socket] = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind(("127.0.0.1", 0))
            base: int = first.getsockname()[1]
            if base + count > 65535 or base == 6379 - count + 1:
                continue
            for offset in range(1, count):
                more = socket.socket()
                socks.append(more)
                more.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()


def _worker_app(directory: Path) -> None:
    (directory / "metricsapp.py").write_text(APP)


def test_a_worker_process_exports_its_counts_after_real_jobs(redis_url: str, app_dir: Path) -> None:
    _worker_app(app_dir)
    port = _free_ports(1)
    args = ["worker", "metricsapp:registry", "--workers=4", f"--metrics-port={port}"]
    with (
        make_client(redis_url, name="default") as producer,
        background(args, redis_url, app_dir) as (proc, log_path),
    ):
        wait_for_log(log_path, f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics")
        wait_for_log(log_path, READY)
        ids = [producer.enqueue("ok", {"n": n}) for n in range(3)]
        ids += [producer.enqueue("boom") for _ in range(2)]
        ids += [producer.enqueue("flaky"), producer.enqueue("slow")]
        for job_id in ids:
            wait_for_status(
                producer, job_id, jobs.JobStatus.COMPLETED, jobs.JobStatus.FAILED, timeout=20
            )
        hanging = producer.enqueue("hang")
        wait_for_status(producer, hanging, jobs.JobStatus.PROCESSING, timeout=20)
        assert producer.cancel(hanging)

        expected = {
            ("jobs_worker_jobs_started_total", "ok"): 3,
            ("jobs_worker_jobs_started_total", "boom"): 2,
            ("jobs_worker_jobs_started_total", "flaky"): 2,
            ("jobs_worker_jobs_started_total", "hang"): 1,
            ("jobs_worker_jobs_completed_total", "ok"): 3,
            ("jobs_worker_jobs_completed_total", "flaky"): 1,
            ("jobs_worker_jobs_failed_total", "boom"): 2,
            ("jobs_worker_jobs_failed_total", "slow"): 1,
            ("jobs_worker_jobs_retried_total", "flaky"): 1,
            ("jobs_worker_jobs_retried_total", "boom"): 0,
            ("jobs_worker_jobs_timed_out_total", "slow"): 1,
            ("jobs_worker_jobs_cancelled_total", "hang"): 1,
            ("jobs_worker_leases_lost_total", "ok"): 0,
            ("jobs_worker_writes_rejected_total", "ok"): 0,
            ("jobs_worker_run_duration_seconds_count", "ok"): 3,
            ("jobs_worker_run_duration_seconds_count", "flaky"): 2,
            ("jobs_worker_queue_wait_seconds_count", "flaky"): 2,
        }

        def counts(samples: Samples) -> dict[tuple[str, str], float]:
            return {(name, t): samples.get((name, "default", t), 0.0) for name, t in expected}

        # The counters move once Redis has recorded each outcome (or the heartbeat saw
        # the cancellation), a moment after the job's status does.
        last: list[Samples] = []

        def all_counted() -> bool:
            last[:] = [_scrape(port)]
            return counts(last[0]) == expected

        wait_until(all_counted, timeout=20, message="counts never reached the expected")
        samples = last[0]
        assert proc.poll() is None, log_path.read_text()

    # A timed-out attempt's run ends when it timed out (the timeout counts from when a
    # slot took the job, a moment before its handler started), not when its abandoned
    # handler returns: 30 s later.
    assert 0 < samples[("jobs_worker_run_duration_seconds_sum", "default", "slow")] < 5
    assert samples[("jobs_worker_queue_wait_seconds_sum", "default", "ok")] >= 0
    # The served queue's gauges, read from Redis at scrape time, come along.
    assert samples[("jobs_up", "default", "")] == 1
    assert samples[("jobs_pending", "default", "")] == 0
    assert samples[("jobs_worker_pools", "default", "")] == 1
    assert samples[("jobs_completed_total", "default", "")] == 4


def test_each_supervised_process_serves_on_its_own_port(redis_url: str, app_dir: Path) -> None:
    _worker_app(app_dir)
    port = _free_ports(2)
    args = ["worker", "metricsapp:registry", "--processes=2", f"--metrics-port={port}"]
    with (
        make_client(redis_url, name="default") as producer,
        background(args, redis_url, app_dir) as (proc, log_path),
    ):
        first, second = _scrape_when_up(port), _scrape_when_up(port + 1)
        assert first[("jobs_up", "default", "")] == second[("jobs_up", "default", "")] == 1
        ids = [producer.enqueue("ok", n) for n in range(20)]
        for job_id in ids:
            wait_for_status(producer, job_id, jobs.JobStatus.COMPLETED, timeout=20)

        def both() -> float | None:
            key = ("jobs_worker_jobs_completed_total", "default", "ok")
            total = _scrape(port).get(key, 0.0) + _scrape(port + 1).get(key, 0.0)
            return total if total == 20 else None

        # Each process counts its own jobs; summed over the targets, every job once.
        assert wait_until(both, timeout=20, message="the two processes never summed to 20")
        assert proc.poll() is None, log_path.read_text()


def test_bad_metrics_options_exit_2_with_one_line(redis_url: str, app_dir: Path) -> None:
    _worker_app(app_dir)
    no_port = cli(
        "worker", "metricsapp:registry", "--metrics-host=0.0.0.0", redis_url=redis_url, cwd=app_dir
    )
    assert no_port.returncode == 2 and "--metrics-host needs --metrics-port" in no_port.stderr
    too_high = cli(
        "worker", "metricsapp:registry", "--processes=3", "--metrics-port=65534",
        redis_url=redis_url, cwd=app_dir,
    )  # fmt: skip
    assert too_high.returncode == 2 and "65536" in too_high.stderr
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = cli(
            "worker", "metricsapp:registry", f"--metrics-port={busy}",
            redis_url=redis_url, cwd=app_dir,
        )  # fmt: skip
    finally:
        taken.close()
    assert proc.returncode == 2 and f"cannot serve on 127.0.0.1:{busy}" in proc.stderr
    assert "Traceback" not in proc.stderr


class _Recorder(WorkerEvents):
    def __init__(self) -> None:
        self.results: list[tuple[str, AttemptResult]] = []
        self.interruptions: list[tuple[str, Interruption]] = []

    def finished(self, queue: str, job_type: str, result: AttemptResult, duration: float) -> None:
        self.results.append((job_type, result))

    def interrupted(self, queue: str, job_type: str, why: Interruption) -> None:
        self.interruptions.append((job_type, why))


class _Broken(WorkerEvents):
    def started(self, queue: str, job_type: str, job: jobs.Job | None, waited_here: float) -> None:
        raise RuntimeError("observer bug")

    def finished(self, queue: str, job_type: str, result: AttemptResult, duration: float) -> None:
        raise RuntimeError("observer bug")


def test_an_observer_that_raises_never_fails_a_job(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    with make_client(redis_url, registry, events=_Broken()) as client:
        assert client.enqueue("ok", 7).result(timeout=10) == 7
    assert "worker events observer failed on started" in caplog.text


def test_worker_metrics_in_a_registry_of_ones_own(redis_url: str) -> None:
    registry = jobs.Registry()
    registry.register_func("ok", lambda ctx, payload: payload)
    own = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics(own)
    recorder = _Recorder()
    with make_client(redis_url, registry, events=metrics) as client:
        for n in range(5):
            client.enqueue("ok", n).result(timeout=10)
        queue = client.queue.name
        wait_until(
            lambda: (
                own.get_sample_value(
                    "jobs_worker_jobs_completed_total", {"queue": queue, "type": "ok"}
                )
                == 5
            ),
            timeout=10,
        )
    with make_client(redis_url, registry, events=recorder) as client:
        client.enqueue("ok", 1).result(timeout=10)
        wait_until(lambda: recorder.results, timeout=10)
    assert recorder.results == [("ok", AttemptResult.COMPLETED)]
    assert (
        own.get_sample_value("jobs_worker_jobs_started_total", {"queue": queue, "type": "ok"}) == 5
    )
    with pytest.raises(jobs.ConfigError, match=r"events must be a jobs\.worker\.WorkerEvents"):
        jobs.WorkerPoolConfig(events=object())  # type: ignore[arg-type]
    unregistered = WorkerMetrics(None)
    assert len(unregistered.collectors()) == 10
