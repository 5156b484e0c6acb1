"""Event stream layout and limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    partitions: int = Field(default=1, ge=1, le=1024)
    """Number of event streams; an event goes to ``crc32(entity_key) % partitions``."""
    maxlen_approx: int = Field(default=1_000_000, ge=1000)
    """Approximate MAXLEN (``XADD MAXLEN ~``) of each event stream."""
    max_payload_bytes: int = Field(default=64 * 1024, ge=256)
    """Largest encoded event accepted by ``publish`` and by the dispatcher."""
    max_future_s: int = Field(default=3600, ge=0)
    """An event whose ``ts`` is further than this in the future is dead-lettered (a
    producer clock or a forged time would pin "latest state" checks forever)."""
    dlq_maxlen_approx: int = Field(default=1_000_000, ge=1000)
