"""`WorkerMetrics` fed `WorkerEvents` by hand: what each event counts, and the queue wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import jobs
from jobs.worker import AttemptResult, Interruption, WorkerEvents

prometheus_client = pytest.importorskip("prometheus_client")
from jobs.metrics import WorkerMetrics  # noqa: E402

LABELS = {"queue": "q", "type": "t"}


def _value(registry: object, name: str, labels: dict[str, str] = LABELS) -> float | None:
    assert isinstance(registry, prometheus_client.CollectorRegistry)
    value: float | None = registry.get_sample_value(name, labels)
    return value


def test_each_event_moves_its_own_metric() -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics(registry)
    due = datetime(2026, 1, 1, tzinfo=UTC)
    job = jobs.Job(
        id="j",
        type="t",
        payload=None,
        status=jobs.JobStatus.PROCESSING,
        created_at=due - timedelta(seconds=60),
        run_at=due,
        started_at=due + timedelta(seconds=2),
    )
    metrics.started("q", "t", job, 0.5)
    metrics.started("q", "t", None, 0.0)  # a record that did not decode: no wait known
    metrics.finished("q", "t", AttemptResult.COMPLETED, 1.5)
    metrics.finished("q", "t", AttemptResult.RETRIED, 0.25)
    metrics.finished("q", "t", AttemptResult.FAILED, 0.25)
    for why in Interruption:
        metrics.interrupted("q", "t", why)
    metrics.write_rejected("q", "t")
    assert _value(registry, "jobs_worker_jobs_started_total") == 2
    for name in ("completed", "retried", "failed", "cancelled", "timed_out"):
        assert _value(registry, f"jobs_worker_jobs_{name}_total") == 1, name
    assert _value(registry, "jobs_worker_leases_lost_total") == 1
    assert _value(registry, "jobs_worker_writes_rejected_total") == 1
    assert _value(registry, "jobs_worker_run_duration_seconds_count") == 3
    assert _value(registry, "jobs_worker_run_duration_seconds_sum") == 2.0
    # Due at run_at, leased 2 s later (Redis's clock), then 0.5 s waiting for a thread.
    assert _value(registry, "jobs_worker_queue_wait_seconds_count") == 1
    assert _value(registry, "jobs_worker_queue_wait_seconds_sum") == 2.5
    assert _value(registry, "jobs_worker_jobs_started_total", {"queue": "q", "type": "x"}) is None


def test_without_a_due_time_the_wait_counts_from_the_enqueue() -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics(registry)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = jobs.Job(
        id="j",
        type="t",
        payload=None,
        status=jobs.JobStatus.PROCESSING,
        created_at=created,
        started_at=created + timedelta(seconds=1),
    )
    metrics.started("q", "t", job, 0.0)
    assert _value(registry, "jobs_worker_queue_wait_seconds_sum") == 1.0


def test_the_base_class_does_nothing_and_is_what_the_config_takes() -> None:
    events = WorkerEvents()
    events.started("q", "t", None, 0.0)
    events.finished("q", "t", AttemptResult.COMPLETED, 0.0)
    events.interrupted("q", "t", Interruption.CANCELLED)
    events.write_rejected("q", "t")
    assert jobs.WorkerPoolConfig(events=events).events is events
    assert jobs.WorkerPoolConfig().events is None
