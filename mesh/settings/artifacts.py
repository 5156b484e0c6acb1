"""Artifact store settings (model files and their metrics)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ArtifactSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    backend: Literal["local", "s3"] = "local"
    local_dir: str = ".mesh/artifacts"
    s3_bucket: str | None = None
    s3_prefix: str = "mesh/"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to wait for a connection to S3 (then ``ProviderError``: retried)."""
    s3_read_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for S3 to answer one request."""
    s3_max_attempts: int = Field(default=3, ge=1)
    """botocore's own attempts per request (standard retry mode) before we see the error."""
