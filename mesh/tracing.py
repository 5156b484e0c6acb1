"""One OpenTelemetry trace per run, across processes.

::

    producer:   publish <type>      (span; its traceparent travels in the event)
    dispatcher: run <workflow>      (child of the publish; its traceparent is kept on
                                     the run's ledger record, field ``trace``)
    worker:     step <step>         (child of the run, one per attempt)

The trace crosses processes as W3C ``traceparent`` strings: on the wire (the optional
``traceparent`` field, ``events.wire``), then on the run record, which every step
reads. A producer in another language that sends its own ``traceparent`` gets the
run under its trace.

Off by default (``tracing.enabled``): every function here then returns at once,
nothing of OpenTelemetry is imported and nothing is added to the wire. On: spans are
exported in batches over OTLP/HTTP (``tracing.otlp_endpoint``); an exporter that
cannot reach its endpoint drops spans (logged by the SDK), it never fails a run.
Configured once per process, and again after a fork (prefork pool children).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from worker_mesh.mesh.settings.tracing import TracingSettings

__all__ = ["Span", "configure", "enabled", "end", "shutdown", "span_now", "start"]

log = logging.getLogger("mesh.tracing")


@dataclass
class _State:
    settings: TracingSettings
    role: str
    pid: int
    provider: Any
    tracer: Any
    propagator: Any


_state: _State | None = None
_wanted: tuple[TracingSettings, str] | None = None
_lock = threading.Lock()


@dataclass
class Span:
    """A started span (``start``), ended by ``end``."""

    otel: Any


def configure(settings: TracingSettings, role: str) -> bool:
    """Turn tracing on for this process as ``role`` when ``settings.enabled``; returns
    whether it is on. Cheap and idempotent: the provider is built on first use."""
    global _wanted
    _wanted = (settings, role) if settings.enabled else None
    return settings.enabled


def enabled() -> bool:
    return _wanted is not None


def _tracer() -> _State | None:
    global _state
    if _wanted is None:
        return None
    st = _state
    if st is not None and st.pid == os.getpid():
        return st
    with _lock:
        if _state is None or _state.pid != os.getpid():
            _state = _build(*_wanted)
        return _state


def _build(settings: TracingSettings, role: str) -> _State:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers = {}
    if settings.otlp_headers is not None:
        for part in settings.otlp_headers.get_secret_value().split(","):
            k, _, v = part.partition("=")
            if k.strip():
                headers[k.strip()] = v.strip()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{settings.service_name}-{role}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=headers,
                                timeout=settings.export_timeout_s)
    provider.add_span_processor(BatchSpanProcessor(
        exporter, schedule_delay_millis=settings.export_delay_ms,
        export_timeout_millis=int(settings.export_timeout_s * 1000)))
    log.info("tracing on: %s spans to %s", role, settings.otlp_endpoint)
    return _State(settings, role, os.getpid(), provider, provider.get_tracer("worker-mesh"),
                  TraceContextTextMapPropagator())


def start(name: str, parent: str | None = None, attrs: dict[str, Any] | None = None) -> Span | None:
    """Start a span under ``parent`` (a traceparent; None: a new trace). None when
    tracing is off."""
    st = _tracer()
    if st is None:
        return None
    ctx = st.propagator.extract({"traceparent": parent}) if parent else None
    span = st.tracer.start_span(name, context=ctx,
                                attributes={k: str(v) for k, v in (attrs or {}).items() if v is not None})
    return Span(span)


def traceparent(span: Span | None) -> str | None:
    """The W3C traceparent that makes another span a child of ``span``."""
    st = _tracer()
    if st is None or span is None:
        return None
    from opentelemetry.trace import set_span_in_context

    carrier: dict[str, str] = {}
    st.propagator.inject(carrier, context=set_span_in_context(span.otel))
    return carrier.get("traceparent")


def end(span: Span | None, *, error: str | None = None, attrs: dict[str, Any] | None = None) -> None:
    """End ``span``; an ``error`` (``ExcType: message``) marks it failed."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    for k, v in (attrs or {}).items():
        if v is not None:
            span.otel.set_attribute(k, str(v))
    if error:
        span.otel.set_status(Status(StatusCode.ERROR, error[:500]))
    span.otel.end()


def span_now(name: str, parent: str | None = None, attrs: dict[str, Any] | None = None) -> str | None:
    """A span that marks a moment (publish, start of a run): started and ended at once;
    returns its traceparent for the children to come (None when tracing is off)."""
    span = start(name, parent, attrs)
    if span is None:
        return None
    tp = traceparent(span)
    end(span)
    return tp


def shutdown() -> None:
    """Export what is buffered and close the exporter (a process about to exit); a later
    span builds a new provider."""
    global _state
    with _lock:
        st, _state = _state, None
    if st is not None and st.pid == os.getpid():
        st.provider.shutdown()
