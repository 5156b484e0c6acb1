"""Artifact store settings (model files and their metrics)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr


class ArtifactSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "s3"] = "local"
    local_dir: str = ".mesh/artifacts"
    s3_bucket: str | None = None
    s3_prefix: str = "mesh/"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
