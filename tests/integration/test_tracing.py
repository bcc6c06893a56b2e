"""OpenTelemetry tracing: one trace from the enqueue call (inside a web request's span) to
the attempt, recorded with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import unique_name

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from jobs.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # A provider of the test's own, not the global one (which can be set once a process).
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def client(redis_url: str, provider: TracerProvider) -> Iterator[jobs.Client]:
    tracing = Tracing(tracer_provider=provider)
    registry = jobs.Registry()
    registry.add_middleware(tracing.middleware, outermost=True)
    tracer = provider.get_tracer("handler")

    @registry.job("greet")
    def greet(ctx: jobs.JobContext, payload: str) -> str:
        with tracer.start_as_current_span("inside the handler"):
            return f"hello {payload}"

    @registry.job("refuse", max_retries=3)
    def refuse(ctx: jobs.JobContext, payload: object) -> None:
        raise jobs.PermanentError("no such customer")

    @registry.job("slow", max_retries=0, timeout=0.2)
    def slow(ctx: jobs.JobContext, payload: object) -> None:
        ctx.sleep(10)

    queue = jobs.RedisQueue.from_url(redis_url, name=unique_name("traced"))
    config = jobs.ClientConfig(
        queue=queue,
        registry=registry,
        before_enqueue=[tracing.before_enqueue],
        worker_pool_config=jobs.WorkerPoolConfig(num_workers=2, poll_interval=0.1),
    )
    with jobs.Client(config) as started:
        yield started
    queue.close()


def _spans(exporter: InMemorySpanExporter, count: int) -> dict[str, ReadableSpan]:
    """The finished spans by name, once there are ``count``."""
    wait_until(lambda: len(exporter.get_finished_spans()) >= count, timeout=10)
    spans = exporter.get_finished_spans()
    assert len(spans) == count, [s.name for s in spans]
    return {s.name: s for s in spans}


def test_one_trace_from_the_web_request_to_the_completed_attempt(
    client: jobs.Client, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with provider.get_tracer("web").start_as_current_span("POST /greetings"):
        handle = client.enqueue("greet", "ada")
    assert handle.result(timeout=10) == "hello ada"
    spans = _spans(exporter, 4)
    request, enqueue = spans["POST /greetings"], spans["enqueue greet"]
    run, inner = spans["run greet"], spans["inside the handler"]
    assert request.context is not None and enqueue.context is not None
    assert run.context is not None and inner.context is not None
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (enqueue, run, inner) if s.context} == {trace_id}
    assert enqueue.parent is not None and enqueue.parent.span_id == request.context.span_id
    assert run.parent is not None and run.parent.span_id == enqueue.context.span_id
    assert run.parent.is_remote  # it came through Redis
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id
    assert enqueue.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert run.status.status_code is StatusCode.OK
    assert dict(run.attributes or {}) == {
        "jobs.job.id": handle.id,
        "jobs.job.type": "greet",
        "jobs.job.attempt": 1,
        "jobs.queue": client.queue.name,
        "messaging.system": "jobs",
    }
    metadata = client.get(handle.id).metadata
    assert metadata["traceparent"].startswith(f"00-{trace_id:032x}-")


def test_a_failed_or_timed_out_attempt_has_an_error_status(
    client: jobs.Client, exporter: InMemorySpanExporter
) -> None:
    refused = client.enqueue("refuse")
    with pytest.raises(jobs.JobFailed):
        refused.result(timeout=10)
    slow = client.enqueue("slow")
    with pytest.raises(jobs.JobFailed):
        slow.result(timeout=10)
    spans = _spans(exporter, 4)
    run = spans["run refuse"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "PermanentError: no such customer"
    assert (run.attributes or {})["jobs.permanent"] is True
    assert [e.name for e in run.events] == ["exception"]
    timed_out = spans["run slow"]
    assert timed_out.status.status_code is StatusCode.ERROR
    assert timed_out.status.description == "attempt timeout"
    # No current span at the enqueue: each job is a trace of its own.
    assert spans["enqueue refuse"].parent is None
    assert spans["run refuse"].context is not None and spans["enqueue refuse"].context is not None
    assert spans["run refuse"].context.trace_id == spans["enqueue refuse"].context.trace_id
    assert spans["run refuse"].context.trace_id != spans["run slow"].context.trace_id


def test_a_job_enqueued_without_a_trace_context_starts_a_trace(
    client: jobs.Client, exporter: InMemorySpanExporter
) -> None:
    plain = jobs.Client(jobs.ClientConfig(queue=client.queue))  # no before_enqueue hook
    assert plain.enqueue("greet", "bob").result(timeout=10) == "hello bob"
    spans = _spans(exporter, 2)
    assert spans["run greet"].parent is None
    assert spans["inside the handler"].parent is not None


def test_neither_extra_is_imported_unless_used() -> None:
    # redis-py 8 imports opentelemetry itself when it is installed: what counts is that
    # jobs adds nothing to what redis loaded.
    code = (
        "import sys, redis; before = set(sys.modules); "
        "import jobs, jobs.cli._main, jobs.dashboard; "
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.split('.')[0] in ('opentelemetry', 'prometheus_client') "
        "or m in ('jobs.tracing', 'jobs.metrics')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"
