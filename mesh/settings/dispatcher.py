"""Dispatcher (stream consumer) settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DispatcherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    group: str = "dispatchers"
    """Consumer group name (one per mesh)."""
    consumer: str | None = None
    """Consumer name; None: ``<hostname>-<pid>``."""
    batch_count: int = Field(default=256, ge=1, le=10_000)
    """XREADGROUP COUNT."""
    block_ms: int = Field(default=500, ge=1)
    """XREADGROUP BLOCK."""
    claim_idle_ms: int = Field(default=30_000, ge=100)
    """A pending entry idle this long belongs to a dead dispatcher and is reclaimed."""
    max_deliveries: int = Field(default=5, ge=1)
    """An entry delivered more than this many times is dead-lettered as poison."""
    dedupe_ttl_s: int = Field(default=86_400, ge=1)
    """How long an idempotency key is remembered."""
    coalesce_tick_ms: int = Field(default=100, ge=10)
    """How often due coalesced runs are flushed."""
