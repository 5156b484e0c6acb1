"""Settings of the AI workflows (churn, re-embedding, content, retraining)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    churn_high_risk_threshold: float = Field(default=0.7, ge=0, le=1)
    """A churn score at or above this publishes ``churn.high_risk``."""
    churn_shard_size: int = Field(default=500, ge=1)
    """Customers per shard of the batch rescoring chord."""
    embed_chunk_chars: int = Field(default=800, ge=50)
    embed_chunk_overlap_chars: int = Field(default=100, ge=0)
    max_content_chars: int = Field(default=200_000, ge=100)
    """Largest document accepted for embedding or generation."""
    content_max_attempts: int = Field(default=3, ge=1)
    """Generation attempts (with feedback) before content is dead-lettered."""
    retrain_cron: str = "0 3 * * 0"
    """Beat schedule of retraining (crontab: minute hour day month weekday)."""
