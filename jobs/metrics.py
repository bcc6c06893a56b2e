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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from jobs.client import Client
from jobs.errors import JobsError
from jobs.queue._inspect import oldest_pending_age

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from jobs.queue.redis_queue import RedisQueue

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
    ``jobs_pending``, ``jobs_scheduled``, ``jobs_waiting``, ``jobs_processing``,
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
                ("jobs_waiting", "Jobs waiting for the jobs they depend on."),
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
            gauges["jobs_waiting"].add_metric(labels, stats.waiting_jobs)
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
