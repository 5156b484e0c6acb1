"""Throughput settings: batched steps and fused chains in the workers.

Defaults come from the capacity benchmark (``benchmarks/capacity.py``, docs/benchmarks.md
"Throughput"); the worker's pool and concurrency for the ``cpu`` queue are
``mesh worker``'s defaults, documented there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ThroughputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    fuse_chains: bool = False
    """Run the next step of a chain in the same task when it is a plain mesh task on
    the same queue (no group, chord or delay in between): one Celery hop instead of
    two, each step still memoized, measured and retried as its own step
    (``workers.fusion``; 2x the sustained churn rate measured here). Off by default for
    now: a fused step's lineage (``step``) and trace span are attributed to the task's
    first step. False: every step is its own task message."""
    fuse_max_steps: int = Field(default=8, ge=1, le=64)
    """Most steps one task runs in a row (bounds a task's run time under fusion)."""
    batch: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per batched step (task name), overrides of its declared ``BatchPolicy``:
    ``{"mesh.churn.score": {"max_items": 128, "max_wait_ms": 5}}``."""

    @model_validator(mode="after")
    def _policies(self) -> ThroughputSettings:
        for step, pol in self.batch.items():
            unknown = set(pol) - {"max_items", "max_wait_ms"}
            if unknown:
                raise ValueError(f"throughput.batch[{step!r}]: unknown key(s) {sorted(unknown)} "
                                 "(max_items, max_wait_ms)")
            if pol.get("max_items", 1) < 1 or pol.get("max_wait_ms", 0) < 0:
                raise ValueError(f"throughput.batch[{step!r}]: max_items >= 1, max_wait_ms >= 0")
        return self
