"""OpenTelemetry tracing: off by default; one server span per RPC, joined to the caller's trace.

The caller's context comes from the W3C `traceparent` (and `tracestate`) gRPC metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace

_tracer: trace.Tracer | None = None


def configure_tracing(
    service_name: str, otlp_endpoint: str | None, sample_ratio: float, exporter: Any | None = None
) -> None:
    """Install a tracer provider exporting over OTLP/gRPC (or to `exporter`, in tests)."""
    global _tracer
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), sampler=ParentBasedTraceIdRatio(sample_ratio)
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    _tracer = provider.get_tracer("genai_services")


def disable_tracing() -> None:
    global _tracer
    _tracer = None


@contextmanager
def rpc_span(service: str, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Iterator[Any]:
    """A server span for one RPC, or None when tracing is off."""
    if _tracer is None:
        yield None
        return
    carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
    with _tracer.start_as_current_span(
        f"{service}/{method}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    ) as span:
        yield span


def trace_id(span: Any) -> str | None:
    if span is None:
        return None
    return format(span.get_span_context().trace_id, "032x")
