"""Run ledger settings: how long a run may go without progress before it is re-driven,
how often it may be re-driven, and how long finished runs are kept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RUNNING_AFTER_S = {
    "api_call": 900,
    "inference": 300,
    "standard": 300,
    "critical": 300,
    "training": 7200,
}


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    redrive_queued_after_s: int = Field(default=300, ge=1)
    """Seconds a run may wait for its next step to start (message in a queue) before the
    re-driver re-sends it from its first unfinished step. Default 5 minutes: above the
    drain time of a normal backlog, far below Celery's one-hour visibility timeout."""
    redrive_running_after_s: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RUNNING_AFTER_S))
    """Per task kind: seconds a started step may run without finishing before its run
    is re-driven (its worker is taken for dead). JSON, e.g. ``{"standard": 120}``; kinds
    left out keep their defaults (api_call 900, inference 300, standard 300,
    critical 300, training 7200)."""
    redrive_max: int = Field(default=3, ge=0)
    """Re-drives without progress before the run is failed and its event dead-lettered
    (the reason names the step it is stuck at)."""
    redrive_interval_s: float = Field(default=5.0, gt=0)
    """How often each dispatcher looks for overdue runs (every dispatcher does; a run is
    claimed by one of them atomically)."""
    redrive_batch: int = Field(default=200, ge=1, le=10_000)
    """Overdue runs claimed per look."""
    held_after_s: int = Field(default=2 * 86_400, ge=60)
    """Deadline of a run held for an off-peak GPU window (its work is not sent yet)."""
    retention_s: int = Field(default=7 * 86_400, ge=60)
    """How long a finished run (its record and memoized step results) is kept."""
    memo_after_end_s: int = Field(default=600, ge=1)
    """How long the memoized step results of a run that succeeded (or was cancelled) are
    kept after it ended: a message redelivered later than that (the re-driver resends
    within minutes) finds the run ended and is dropped instead of answered. A failed run
    keeps them for ``retention_s`` (a dead-letter replay resumes it from them). Memory:
    about 1 KB per run ended in the last ``memo_after_end_s``."""
    memo_max_bytes: int = Field(default=256 * 1024, ge=0)
    """A step result larger than this (JSON) is not memoized: re-driving re-runs it."""

    def running_after_s(self, kind: str) -> int:
        return self.redrive_running_after_s.get(kind, DEFAULT_RUNNING_AFTER_S.get(kind, 300))
