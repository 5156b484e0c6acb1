"""Monitoring settings: metrics ports, heartbeats, Flower, Sentry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of this process's /metrics (0: not served)."""
    metrics_address: str = "127.0.0.1"
    """Address every /metrics (worker, dispatcher, beat, `mesh exporter`) listens on.
    Loopback by default, so nothing is exposed by accident; a pod sets ``0.0.0.0`` (its
    own network namespace), with a NetworkPolicy that admits only Prometheus."""
    sentry_dsn: SecretStr | None = None
    environment: str = "dev"
    exporter_port: int = Field(default=9808, ge=1, le=65535)
    """Port of `mesh exporter`'s /metrics (stream lag, queue depths, freshness from Redis)."""
    multiproc_dir: str | None = None
    """Folder of a prefork worker's multiprocess metric files (None: a new temp folder)."""
    heartbeat_s: float = Field(default=5.0, gt=0)
    """How often a worker writes its heartbeat (workers alive per queue)."""
    worker_dead_after_s: float = Field(default=30.0, gt=0)
    """A worker whose last heartbeat is older than this counts as gone."""
    flower_port: int = Field(default=5555, ge=1, le=65535)
    """Port of `mesh flower`."""
    flower_basic_auth: SecretStr | None = None
    """``user:password`` (several: comma-separated) that Flower's UI, API and /metrics
    require. Or ``flower_basic_auth_file``; without either `mesh flower` refuses to start
    unless given ``--no-auth``. Never on a command line (``ps`` shows it)."""
    flower_basic_auth_file: str | None = None
    """A file of ``user:password`` lines (e.g. a mounted Kubernetes Secret)."""
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of tasks traced for Sentry performance monitoring (0: errors only)."""
    sentry_scrub_fields: list[str] = Field(default_factory=lambda: [
        "email", "name", "phone", "address", "body", "password", "token", "api_key"])
    """Payload / argument field names whose values never leave the process."""
