"""OpenTelemetry tracing of jobs, from the enqueue call to the attempt (extra ``jobs[otel]``).

`Tracing` plugs into the two existing hook points, nothing else::

    from jobs.tracing import Tracing

    tracing = Tracing()  # the global tracer provider, or Tracing(tracer_provider=...)
    registry.add_middleware(tracing.middleware, outermost=True)  # the worker side
    config = jobs.ClientConfig(queue=queue, registry=registry,
                               before_enqueue=[tracing.before_enqueue])  # the producer side

The producer's ``before_enqueue`` hook records a ``PRODUCER`` span (a child of whatever
span is current: a web request's, say) and writes its W3C trace context into the job's
metadata (``traceparent``, and ``tracestate`` when there is one). The worker's
middleware continues that trace in a ``CONSUMER`` span around the attempt, current
while the handler runs (so its own spans nest under it), with the attributes
``jobs.job.id``, ``jobs.job.type``, ``jobs.job.attempt`` and ``jobs.queue``, and the
status of the outcome: OK when the handler returned, ERROR (with the exception recorded)
when it raised or its attempt was cancelled, timed out or lost its lease. A job without
a trace context in its metadata gets a span of a new trace.

Nothing else in the library imports this module, so a process that does not use it never
imports ``opentelemetry``. Limits: the enqueue span ends when the hook returns, before the
job is written (a hook cannot wrap the write); a record that does not decode, or of a
type without a handler, fails before any middleware runs, so its attempt has no span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jobs import __version__
from jobs._codec import describe
from jobs.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.propagators.textmap import TextMapPropagator

    from jobs.config import JobConfig
    from jobs.context import JobContext

#: The metadata keys the trace context travels in (the W3C header names).
TRACE_KEYS = ("traceparent", "tracestate")


class Tracing:
    """A producer hook and a worker middleware that trace jobs with OpenTelemetry.

    Args:
        tracer_provider: where spans go; the global provider
            (``opentelemetry.trace.set_tracer_provider``) when None.
        propagator: how the context is written into and read from the metadata; W3C
            Trace Context (``traceparent``, ``tracestate``) by default.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("jobs", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator or TraceContextTextMapPropagator()

    def before_enqueue(self, job_type: str, config: JobConfig) -> JobConfig:
        """A ``ClientConfig.before_enqueue`` hook: a span, and its context in the metadata."""
        with self._tracer.start_as_current_span(
            f"enqueue {job_type}",
            kind=SpanKind.PRODUCER,
            attributes={"jobs.job.type": job_type, "messaging.system": "jobs"},
        ):
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
        if not carrier:
            return config  # no recording span (no SDK configured): nothing to carry
        return attrs.evolve(config, metadata={**config.metadata, **carrier})

    def middleware(self, ctx: JobContext, call_next: Callable[[], Any]) -> Any:
        """A `Registry.add_middleware` middleware: the attempt's span, current while it runs."""
        job = ctx.job
        carrier = {k: v for k in TRACE_KEYS if isinstance(v := job.metadata.get(k), str)}
        parent = self._propagator.extract(carrier) if carrier else None
        with self._tracer.start_as_current_span(
            f"run {job.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "jobs.job.id": job.id,
                "jobs.job.type": job.type,
                "jobs.job.attempt": job.attempts,
                "jobs.queue": job.queue,
                "messaging.system": "jobs",
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = call_next()
            except BaseException as exc:
                span.record_exception(exc)
                span.set_attribute("jobs.permanent", isinstance(exc, PermanentError))
                span.set_status(Status(StatusCode.ERROR, describe(exc)))
                raise
            reason = ctx.cancel_reason
            if reason is not None:
                # The handler returned, but its attempt was abandoned: that is the outcome.
                span.set_status(Status(StatusCode.ERROR, f"attempt {reason}"))
            else:
                span.set_status(Status(StatusCode.OK))
            return result
