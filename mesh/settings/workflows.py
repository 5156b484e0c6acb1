"""Settings of the AI workflows (churn, re-embedding, content, retraining)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    builtin: bool = True
    """Route events to the built-in workflow pack (churn, customer-profile,
    churn-rescore, content, reembed, retrain). False: only a team's own workflows
    (``celery.extra_modules``) run, and status, SLAs and alerts cover only those."""
    disabled: list[str] = Field(default_factory=list)
    """Names of workflows not to route events to (JSON list), built-in or not."""
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
    content_banned_phrases: list[str] = Field(default_factory=lambda: [
        "click here", "buy now", "act now", "100% guaranteed", "limited time offer",
        "risk-free", "once in a lifetime",
    ])
    """Phrases generated content must not contain (case-insensitive)."""
    content_min_readability: float = Field(default=30.0, ge=-100, le=120)
    """Lowest Flesch reading ease accepted for generated content (higher: easier)."""
    retention_min_words: int = Field(default=80, ge=10)
    """Minimum length of a retention message written for a ``churn.high_risk`` customer."""
    retrain_cron: str = "0 3 * * 0"
    """Beat schedule of retraining (crontab: minute hour day month weekday)."""
    retrain_samples: int = Field(default=4000, ge=200, le=1_000_000)
    """Synthetic customers generated per scheduled retraining (train + held-out set)."""
    retrain_holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    """Share of the generated customers held out; candidate and current model are both
    evaluated on exactly this set."""
    retrain_max_auc_drop: float = Field(default=0.0, ge=0, le=1)
    """A candidate is promoted when its held-out ROC AUC >= current AUC - this (0: not worse)."""
    churn_rescore_after_promotion: bool = True
    """Start the batch rescoring of all customers when a new churn model is promoted."""
