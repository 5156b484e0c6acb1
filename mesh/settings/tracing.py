"""Tracing settings: OpenTelemetry traces of runs, exported over OTLP/HTTP. Off by
default: with ``enabled`` false no OpenTelemetry module is even imported."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class TracingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    """Trace every run: a span at publish, one when the dispatcher starts the run, one per
    step in the workers, one trace per run (``traceparent`` on the wire)."""
    otlp_endpoint: str = "http://localhost:4318/v1/traces"
    """OTLP/HTTP traces endpoint (Grafana Tempo, Jaeger, an OpenTelemetry Collector)."""
    otlp_headers: SecretStr | None = None
    """Headers sent with each export, ``k1=v1,k2=v2`` (e.g. an auth token); kept secret."""
    service_name: str = Field(default="worker-mesh", min_length=1, max_length=128)
    """``service.name`` resource attribute; each process adds its role
    (``worker-mesh-dispatcher``, ``worker-mesh-worker``, ``worker-mesh-producer``)."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces kept (parent-based: a run follows its publish's decision)."""
    export_delay_ms: int = Field(default=2000, ge=10, le=60_000)
    """Longest wait before finished spans are exported (batch span processor)."""
    export_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Timeout of one export request."""
