"""Monitoring settings: metrics ports, Sentry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of this process's /metrics (0: not served)."""
    sentry_dsn: SecretStr | None = None
    environment: str = "dev"
