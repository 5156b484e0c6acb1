"""The one typed settings tree of Worker Mesh.

Built once (``MeshSettings.load()``) and passed down; nothing reads ``os.environ``
at import time. Environment variables use the prefix ``MESH_`` and one ``_`` between
the group and the field: ``MESH_REDIS_URL``, ``MESH_DISPATCHER_BATCH_COUNT``,
``MESH_GPU_OFFPEAK_WINDOWS``. A ``MESH_*`` variable that names no setting is an error,
not silently ignored, so a misspelt setting is caught at start-up.

Each group lives in its own module (one concept each); this module composes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker_mesh.mesh import redact
from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings.artifacts import ArtifactSettings
from worker_mesh.mesh.settings.celery import CelerySettings
from worker_mesh.mesh.settings.dispatcher import DispatcherSettings
from worker_mesh.mesh.settings.flow import FlowSettings, LimitSpec
from worker_mesh.mesh.settings.gpu import GpuSettings
from worker_mesh.mesh.settings.llm import LlmSettings
from worker_mesh.mesh.settings.monitoring import MonitoringSettings
from worker_mesh.mesh.settings.redis import RedisSettings
from worker_mesh.mesh.settings.runs import RunSettings
from worker_mesh.mesh.settings.streams import StreamSettings
from worker_mesh.mesh.settings.throughput import ThroughputSettings
from worker_mesh.mesh.settings.tracing import TracingSettings
from worker_mesh.mesh.settings.workflows import WorkflowSettings

ENV_PREFIX = "MESH_"

__all__ = [
    "ArtifactSettings",
    "CelerySettings",
    "DispatcherSettings",
    "FlowSettings",
    "GpuSettings",
    "LimitSpec",
    "LlmSettings",
    "MeshSettings",
    "MonitoringSettings",
    "RedisSettings",
    "RunSettings",
    "StreamSettings",
    "ThroughputSettings",
    "TracingSettings",
    "WorkflowSettings",
]


class MeshSettings(BaseSettings):
    """Every setting of a mesh process, grouped. Unknown keys are rejected."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        case_sensitive=False,
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    dispatcher: DispatcherSettings = Field(default_factory=DispatcherSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    throughput: ThroughputSettings = Field(default_factory=ThroughputSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MeshSettings:
        """Build the tree from ``environ`` (default: the process environment).

        Raises ``ConfigError`` naming every unknown ``MESH_*`` key and every invalid value.
        Every secret of the tree is registered with ``mesh.redact``, so it is masked in
        whatever this process logs or prints from then on.
        """
        settings = cls._build(environ, overrides)
        redact.remember_settings(settings)
        return settings

    @classmethod
    def _build(cls, environ: Mapping[str, str] | None, overrides: dict[str, Any]) -> MeshSettings:
        env = dict(os.environ if environ is None else environ)
        unknown = unknown_env_keys(env)
        if unknown:
            raise ConfigError(
                "unknown setting(s): " + ", ".join(sorted(unknown))
                + " (see `mesh settings` for the valid names)"
            )
        try:
            if environ is None:
                return cls(**overrides)
            saved = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
            for k in saved:
                del os.environ[k]
            try:
                os.environ.update({k: v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)})
                return cls(**overrides)
            finally:
                for k in [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]:
                    del os.environ[k]
                os.environ.update(saved)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc
        except SettingsError as exc:  # a value that should be JSON is not
            raise ConfigError(_describe_json(env) or str(exc)) from None

    def to_env(self) -> dict[str, str]:
        """The non-default settings as ``MESH_*`` variables (secrets included, as-is).

        Used to hand the exact same tree to child processes (workers, dispatchers).
        """
        out: dict[str, str] = {}
        for group_name in type(self).model_fields:
            group: BaseModel = getattr(self, group_name)
            for field_name in type(group).model_fields:
                value = getattr(group, field_name)
                default = type(group).model_fields[field_name].get_default(call_default_factory=True)
                if value == default:
                    continue
                out[f"{ENV_PREFIX}{group_name}_{field_name}".upper()] = _env_value(value)
        return out


def setting_names() -> dict[str, type[BaseModel]]:
    """Every valid ``MESH_*`` name mapped to its group model."""
    names: dict[str, type[BaseModel]] = {}
    for group_name, field in MeshSettings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for field_name in model.model_fields:
            names[f"{ENV_PREFIX}{group_name}_{field_name}".upper()] = model
    return names


def _describe_json(env: Mapping[str, str]) -> str:
    """Name the variable whose value is not the JSON its setting needs (a list, a
    mapping), with the expected form."""
    import json

    models = setting_names()
    for key, value in env.items():
        model = models.get(key.upper())
        if model is None:
            continue
        field_name = key.upper()[len(ENV_PREFIX):].split("_", 1)[1].lower()
        field = model.model_fields.get(field_name)
        shape = str(field.annotation) if field is not None else ""
        if not any(t in shape for t in ("list", "dict", "Mapping")):
            continue
        try:
            json.loads(value)
        except ValueError:
            example = '["orders.workflows"]' if "list" in shape else '{"standard": 120}'
            return (f"{key.upper()} must be JSON ({'a list' if 'list' in shape else 'an object'}, "
                    f"e.g. {key.upper()}='{example}'), got {value[:80]!r}")
    return ""


def unknown_env_keys(env: Mapping[str, str]) -> list[str]:
    valid = setting_names()
    groups = {f"{ENV_PREFIX}{g}".upper() for g in MeshSettings.model_fields}
    out = []
    for key in env:
        up = key.upper()
        if not up.startswith(ENV_PREFIX) or up in valid or up in groups:
            continue
        out.append(key)
    return out


def _env_value(value: Any) -> str:
    import json

    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):  # nested models (flow limits) as their JSON
        return json.dumps(value, default=lambda m: m.model_dump(exclude_defaults=True))
    return str(value)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
