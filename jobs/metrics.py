"""Prometheus metrics of queues, read from Redis at scrape time (extra ``jobs[metrics]``).

Register a `QueueCollector` in any ``prometheus_client`` registry::

    from prometheus_client import REGISTRY, start_http_server
    from jobs.metrics import QueueCollector

    REGISTRY.register(QueueCollector(client))
    start_http_server(9100)

Every value comes from the queue's keys in Redis (the stats hash, the index sizes, the
worker registry), so any number of processes may export the same queue: each reports
the same per-queue numbers, which are never summed twice by a query that takes ``max``
or one target per queue. A scrape costs Redis a few O(1) commands per queue.

`WorkerMetrics` counts what one worker process's pools did (attempts started, completed,
failed, retried, cancelled, timed out, leases lost, writes refused; run time and queue
wait histograms), labelled ``queue`` and ``type``: pass it as `WorkerPoolConfig.events`.
Those are per process, so a query sums them over the processes it scrapes.
`serve_metrics` starts the HTTP endpoint of ``python -m jobs worker --metrics-port``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import redis
from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from jobs.client import Client
from jobs.errors import JobsError
from jobs.queue._inspect import oldest_pending_age
from jobs.worker._events import AttemptResult, Interruption, WorkerEvents

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from jobs.job import Job
    from jobs.queue.redis_queue import RedisQueue

#: Buckets of both histograms, seconds: from a few milliseconds to an hour.
BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip

_COUNTERS = (
    # (metric name without _total, QueueStats field, help)
    ("jobs_enqueued", "total_jobs", "Jobs ever enqueued on the queue."),
    ("jobs_completed", "completed_jobs", "Jobs that completed."),
    ("jobs_failed", "failed_jobs", "Jobs that failed for good."),
    ("jobs_cancelled", "cancelled_jobs", "Jobs cancelled."),
    ("jobs_retried", "retried_attempts", "Failed attempts scheduled for a retry."),
    ("jobs_lost_leases", "lost_leases", "Leases that expired (a worker died or stalled)."),
    ("jobs_rejected_writes", "rejected_writes", "Late results refused by the lease fence."),
)


class QueueCollector(Collector):
    """Gauges and counters of one or more queues, read from Redis on each scrape.

    Args:
        sources: `Client` or `RedisQueue` objects, one per queue to export.

    Metrics, each labelled ``queue``: ``jobs_up`` (1 when Redis answered the scrape),
    ``jobs_pending``, ``jobs_scheduled``, ``jobs_processing``,
    ``jobs_oldest_pending_age_seconds``, ``jobs_worker_pools``, ``jobs_worker_threads``,
    ``jobs_last_processed_timestamp_seconds`` (gauges) and ``jobs_enqueued_total``,
    ``jobs_completed_total``, ``jobs_failed_total``, ``jobs_cancelled_total``,
    ``jobs_retried_total``, ``jobs_lost_leases_total``, ``jobs_rejected_writes_total``
    (counters kept in Redis per queue, so several exporters never double-count).

    .. versionadded:: 0.1
    """

    def __init__(self, *sources: Client | RedisQueue) -> None:
        if not sources:
            raise ValueError("QueueCollector needs at least one Client or RedisQueue")
        self._queues = [s.queue if isinstance(s, Client) else s for s in sources]

    def describe(self) -> list[Metric]:
        """Nothing: registering the collector must not read Redis."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read every queue now and yield its metrics."""
        up = GaugeMetricFamily("jobs_up", "1 if Redis answered this scrape.", labels=["queue"])
        gauges = {
            name: GaugeMetricFamily(name, text, labels=["queue"])
            for name, text in (
                ("jobs_pending", "Jobs ready to run now."),
                ("jobs_scheduled", "Jobs waiting for a delay or a retry backoff."),
                ("jobs_processing", "Jobs leased by a worker."),
                (
                    "jobs_oldest_pending_age_seconds",
                    "How long the next job to run has been ready (0 when none is).",
                ),
                ("jobs_worker_pools", "Live worker pools."),
                ("jobs_worker_threads", "Handler threads of the live worker pools."),
                (
                    "jobs_last_processed_timestamp_seconds",
                    "When a job last finished (Unix time).",
                ),
            )
        }
        counters = {
            name: CounterMetricFamily(name, text, labels=["queue"]) for name, _, text in _COUNTERS
        }
        for queue in self._queues:
            labels = [queue.name]
            try:
                stats = queue.stats()
                workers = queue.workers()
                age = oldest_pending_age(queue)
            except (JobsError, redis.RedisError):
                # One unreachable queue is reported down; the scrape of the others goes on.
                up.add_metric(labels, 0)
                continue
            up.add_metric(labels, 1)
            gauges["jobs_pending"].add_metric(labels, stats.pending_jobs)
            gauges["jobs_scheduled"].add_metric(labels, stats.scheduled_jobs)
            gauges["jobs_processing"].add_metric(labels, stats.processing_jobs)
            gauges["jobs_oldest_pending_age_seconds"].add_metric(labels, age or 0.0)
            gauges["jobs_worker_pools"].add_metric(labels, len(workers))
            gauges["jobs_worker_threads"].add_metric(labels, sum(w.num_workers for w in workers))
            if stats.last_processed is not None:
                gauges["jobs_last_processed_timestamp_seconds"].add_metric(
                    labels, stats.last_processed.timestamp()
                )
            for name, field, _ in _COUNTERS:
                counters[name].add_metric(labels, getattr(stats, field))
        yield up
        yield from gauges.values()
        yield from counters.values()


class WorkerMetrics(WorkerEvents):
    """Prometheus counters and histograms of this process's worker pools.

    Pass it as ``WorkerPoolConfig(events=...)``; one instance may serve several pools.
    Every metric is labelled ``queue`` and ``type`` (the job type):

    - ``jobs_worker_jobs_started_total``: attempts whose handler started;
    - ``jobs_worker_jobs_completed_total``, ``jobs_worker_jobs_failed_total`` (for good),
      ``jobs_worker_jobs_retried_total``: attempt outcomes recorded in Redis;
    - ``jobs_worker_jobs_cancelled_total``, ``jobs_worker_jobs_timed_out_total``,
      ``jobs_worker_leases_lost_total``: jobs the pool stopped working on (a timed-out
      attempt is also counted retried or failed once its failure is recorded);
    - ``jobs_worker_writes_rejected_total``: outcomes refused by the lease fence;
    - ``jobs_worker_run_duration_seconds``: how long handlers ran (histogram);
    - ``jobs_worker_queue_wait_seconds``: from when a job became due (enqueued, or its
      delay or retry time) to when its attempt started (histogram).

    Args:
        registry: where to register the metrics (``prometheus_client.REGISTRY`` by
            default); None registers them nowhere (collect them with `collectors`).

    .. versionadded:: 0.1
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        labels = ["queue", "type"]

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, labels, registry=registry)

        self.started_total = counter("jobs_worker_jobs_started", "Attempts started.")
        self.completed_total = counter("jobs_worker_jobs_completed", "Attempts that completed.")
        self.failed_total = counter(
            "jobs_worker_jobs_failed", "Attempts that failed and failed their job for good."
        )
        self.retried_total = counter(
            "jobs_worker_jobs_retried", "Attempts that failed and scheduled a retry."
        )
        self.cancelled_total = counter(
            "jobs_worker_jobs_cancelled", "Fetched or running jobs cancelled."
        )
        self.timed_out_total = counter(
            "jobs_worker_jobs_timed_out", "Attempts that ran past their timeout."
        )
        self.leases_lost_total = counter(
            "jobs_worker_leases_lost", "Held jobs whose lease this process lost."
        )
        self.writes_rejected_total = counter(
            "jobs_worker_writes_rejected", "Outcomes refused: the lease was no longer held."
        )
        self.run_duration = Histogram(
            "jobs_worker_run_duration_seconds",
            "How long handlers ran.",
            labels,
            registry=registry,
            buckets=BUCKETS,
        )
        self.queue_wait = Histogram(
            "jobs_worker_queue_wait_seconds",
            "From when a job became due to when its attempt started.",
            labels,
            registry=registry,
            buckets=BUCKETS,
        )
        self._results = {
            AttemptResult.COMPLETED: self.completed_total,
            AttemptResult.FAILED: self.failed_total,
            AttemptResult.RETRIED: self.retried_total,
        }
        self._interruptions = {
            Interruption.CANCELLED: self.cancelled_total,
            Interruption.TIMED_OUT: self.timed_out_total,
            Interruption.LEASE_LOST: self.leases_lost_total,
        }
        self._lock = threading.Lock()
        # Every metric's child for each (queue, type) seen, made at first sight (so a new
        # type's counters start at 0): `labels()` validates and locks on every call.
        self._labelled: dict[tuple[str, str], _Labelled] = {}

    def collectors(self) -> list[Counter | Histogram]:
        """Every metric, for a registry of your own (``registry.register(m)`` each)."""
        return [
            self.started_total,
            *self._results.values(),
            *self._interruptions.values(),
            self.writes_rejected_total,
            self.run_duration,
            self.queue_wait,
        ]

    def _children(self, queue: str, job_type: str) -> _Labelled:
        labelled = self._labelled.get((queue, job_type))
        if labelled is None:
            with self._lock:
                labelled = self._labelled.get((queue, job_type))
                if labelled is None:
                    labelled = _Labelled(self, queue, job_type)
                    self._labelled[(queue, job_type)] = labelled
        return labelled

    def started(self, queue: str, job_type: str, job: Job | None, waited_here: float) -> None:
        """Count the start; observe the queue wait (Redis's clock to the fetch, ours after)."""
        children = self._children(queue, job_type)
        children.started.inc()
        if job is None or job.started_at is None:
            return
        due = job.run_at or job.created_at
        if due is None:
            return
        wait = max((job.started_at - due).total_seconds(), 0.0) + waited_here
        children.queue_wait.observe(wait)

    def finished(self, queue: str, job_type: str, result: AttemptResult, duration: float) -> None:
        """Count the outcome; observe how long the handler ran."""
        children = self._children(queue, job_type)
        children.results[result].inc()
        children.run_duration.observe(duration)

    def interrupted(self, queue: str, job_type: str, why: Interruption) -> None:
        """Count a cancellation, a timeout or a lost lease."""
        self._children(queue, job_type).interruptions[why].inc()

    def write_rejected(self, queue: str, job_type: str) -> None:
        """Count an outcome the lease fence refused."""
        self._children(queue, job_type).writes_rejected.inc()


class _Labelled:
    """The children of every `WorkerMetrics` metric for one (queue, type)."""

    __slots__ = (
        "interruptions",
        "queue_wait",
        "results",
        "run_duration",
        "started",
        "writes_rejected",
    )

    def __init__(self, metrics: WorkerMetrics, queue: str, job_type: str) -> None:
        self.started = metrics.started_total.labels(queue, job_type)
        self.results = {r: m.labels(queue, job_type) for r, m in metrics._results.items()}
        self.interruptions = {
            i: m.labels(queue, job_type) for i, m in metrics._interruptions.items()
        }
        self.writes_rejected = metrics.writes_rejected_total.labels(queue, job_type)
        self.run_duration = metrics.run_duration.labels(queue, job_type)
        self.queue_wait = metrics.queue_wait.labels(queue, job_type)


def serve_metrics(
    port: int,
    host: str = "127.0.0.1",
    sources: tuple[Client | RedisQueue, ...] = (),
) -> WorkerMetrics:
    """Serve ``/metrics`` on ``host:port`` from a thread; the `WorkerMetrics` to pass the pools.

    The endpoint exports a registry of its own: the returned `WorkerMetrics`, a
    `QueueCollector` of ``sources`` when given, and the process and platform metrics
    (``process_*``, ``python_info``) that ``prometheus_client`` exports by default.

    Raises:
        OSError: the port cannot be bound.
    """
    registry = CollectorRegistry()
    registry.register(PROCESS_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    metrics = WorkerMetrics(registry)
    if sources:
        registry.register(QueueCollector(*sources))
    start_http_server(port, addr=host, registry=registry)
    return metrics
