"""GPU pool settings: micro-batching, off-peak windows, autoscaling."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GpuSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=64, ge=1)
    """Largest micro-batch gathered into one forward pass."""
    max_wait_ms: int = Field(default=20, ge=0)
    """Longest a micro-batch waits for more items."""
    offpeak_windows: list[str] = Field(default_factory=lambda: ["01:00-06:00 UTC"])
    """Off-peak windows, ``HH:MM-HH:MM <IANA zone>``; bulk GPU work waits for one."""
    device: str | None = None
    """Torch device; None: ``cuda`` when present, else ``cpu``."""
