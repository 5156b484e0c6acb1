"""Redis connection settings (streams, Celery broker and result backend share them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class RedisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    url: SecretStr | None = None
    """``redis://`` or ``rediss://`` URL, may carry a password. None: the mesh starts
    its own ``redis-server`` (demo and tests only). A secret: it may hold a password."""
    key_prefix: str = Field(default="mesh", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Prefix of every key the mesh writes, so several meshes share one Redis."""
    socket_timeout_s: float = Field(default=5.0, gt=0)
    socket_connect_timeout_s: float = Field(default=3.0, gt=0)
    health_check_interval_s: int = Field(default=15, ge=0)
    startup_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long a process or command waits at start for an unreachable Redis before it
    exits (code 3). Refused credentials, an untrusted certificate or a bad URL exit at
    once; after start, outages are retried with backoff instead."""
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    """Upper bound of the reconnect backoff of dispatchers and publishers."""
    tls_ca_file: str | None = None
    """CA bundle for ``rediss://`` (None: the system store)."""
    embedded_dir: str = ".mesh/redis"
    """Data folder of the embedded ``redis-server`` (used only when ``url`` is None)."""
