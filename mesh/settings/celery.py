"""Celery app settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CelerySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prefetch_multiplier: int = Field(default=1, ge=1, le=16)
    """Bounded prefetch: with acks_late each worker process reserves this many tasks."""
    task_time_limit_s: int = Field(default=1800, ge=1)
    """Hard limit of the longest task (training); the worker kills a task past it."""
    task_soft_time_limit_s: int = Field(default=1700, ge=1)
    visibility_timeout_s: int = Field(default=3600, ge=1)
    """Unacked tasks are redelivered after this; must exceed ``task_time_limit_s``."""
    result_expires_s: int = Field(default=86_400, ge=60)
    worker_concurrency: int = Field(default=2, ge=1)
    worker_max_tasks_per_child: int = Field(default=100_000, ge=1)
    """Recycle a pool process after this many tasks (memory is also capped below);
    recycling often shows up as latency spikes."""
    worker_max_memory_per_child_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    extra_modules: list[str] = Field(default_factory=list)
    """More modules to import in every mesh process: your own workflows and tasks."""
    task_always_eager: bool = False
    """Run tasks in-process (unit tests of canvases only; never in production)."""

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> CelerySettings:
        if self.task_soft_time_limit_s > self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must not exceed task_time_limit_s")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                "visibility_timeout_s must exceed task_time_limit_s, or a long task is "
                "redelivered while still running"
            )
        return self
