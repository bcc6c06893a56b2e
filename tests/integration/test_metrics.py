"""The Prometheus collector: scraped over HTTP and parsed with ``prometheus_client.parser``."""

from __future__ import annotations

import threading
import urllib.request
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import jobs
from tests.helpers import free_port
from tests.integration._clients import make_client, unique_name
from tests.integration._dashboard import fill_queue

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from jobs.metrics import QueueCollector  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _scrape(*sources: jobs.Client | jobs.RedisQueue) -> dict[tuple[str, str], float]:
    """Serve a registry holding one collector, scrape it over HTTP, parse the samples."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(QueueCollector(*sources))
    server = make_server(
        "127.0.0.1", 0, prometheus_client.make_wsgi_app(registry), handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("queue", ""))] = sample.value
    return samples


@pytest.fixture
def clients(redis_url: str) -> Iterator[tuple[jobs.Client, jobs.Client]]:
    with (
        make_client(redis_url, name=unique_name("a")) as a,
        make_client(redis_url, name=unique_name("b")) as b,
    ):
        yield a, b


def test_a_scrape_reads_every_queue_from_redis(redis_url: str) -> None:
    filled = fill_queue(redis_url, unique_name("shop"))
    registry = jobs.Registry()
    registry.register_func("x", lambda ctx, payload: payload)
    with (
        make_client(redis_url, name=unique_name("idle")) as idle,
        make_client(redis_url, registry, name=filled.queue, start=False, num_workers=3) as shop,
    ):
        # The pool starts after the first scrape: it would take the pending jobs.
        samples = _scrape(shop, idle.queue)
        shop.start()
        with_pool = _scrape(shop)
    q, other = filled.queue, idle.queue.name
    assert samples[("jobs_up", q)] == 1 and samples[("jobs_up", other)] == 1
    assert samples[("jobs_pending", q)] == 2
    assert samples[("jobs_scheduled", q)] == 0 and samples[("jobs_processing", q)] == 0
    assert samples[("jobs_waiting", q)] == 0
    assert samples[("jobs_oldest_pending_age_seconds", q)] > 0
    assert samples[("jobs_enqueued_total", q)] == 7
    assert samples[("jobs_completed_total", q)] == 3
    assert samples[("jobs_failed_total", q)] == 2
    assert samples[("jobs_cancelled_total", q)] == 0
    assert samples[("jobs_lost_leases_total", q)] == 0
    assert samples[("jobs_rejected_writes_total", q)] == 0
    assert samples[("jobs_worker_pools", q)] == 0
    assert samples[("jobs_last_processed_timestamp_seconds", q)] > 1.7e9
    assert samples[("jobs_pending", other)] == 0
    assert samples[("jobs_oldest_pending_age_seconds", other)] == 0
    assert ("jobs_last_processed_timestamp_seconds", other) not in samples
    assert with_pool[("jobs_worker_pools", q)] == 1
    assert with_pool[("jobs_worker_threads", q)] == 3


def test_two_exporters_of_one_queue_report_the_same_numbers(redis_url: str) -> None:
    filled = fill_queue(redis_url, unique_name())
    with (
        make_client(redis_url, name=filled.queue) as one,
        make_client(redis_url, name=filled.queue) as two,
    ):
        first, second = _scrape(one), _scrape(two)
    counters = {k: v for k, v in first.items() if k[0].endswith("_total")}
    assert counters and all(second[k] == v for k, v in counters.items())


def test_an_unreachable_redis_is_reported_down_without_failing_the_scrape(
    clients: tuple[jobs.Client, jobs.Client],
) -> None:
    up, _ = clients
    gone = jobs.RedisQueue.from_url(f"redis://127.0.0.1:{free_port()}/0", name="gone")
    try:
        samples = _scrape(up, gone)
    finally:
        gone.close()
    assert samples[("jobs_up", up.queue.name)] == 1
    assert samples[("jobs_up", "gone")] == 0
    assert ("jobs_pending", "gone") not in samples


def test_the_collector_needs_a_queue() -> None:
    with pytest.raises(ValueError, match="at least one"):
        QueueCollector()
