"""Flow-control settings: cluster-wide rate limits, concurrency keys, fair share.

Limits are declared per named resource (a provider, a provider's model, any shared API)
as JSON, e.g.::

    MESH_FLOW_LIMITS='{"llm": {"requests_per_interval": 120, "tokens_per_interval": 20000,
                               "interval_s": 60, "wait_sla_s": 600}}'
    MESH_FLOW_CONCURRENCY='{"content.customer": 1}'

A resource or concurrency name that is not declared here is unlimited: a step that
asks for it is admitted at once, without a Redis round trip.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9_.:@/-]{1,80}$")


class LimitSpec(BaseModel):
    """One resource's budget per sliding interval (both dimensions optional)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_interval: int | None = Field(default=None, ge=1)
    """Requests admitted in any sliding ``interval_s`` (None: not limited by count)."""
    tokens_per_interval: int | None = Field(default=None, ge=1)
    """Tokens (estimated at admission, reconciled with the reported usage after the
    call) admitted in any sliding ``interval_s`` (None: not limited by tokens)."""
    interval_s: float = Field(default=60.0, gt=0, le=86_400)
    """Length of the sliding window the provider counts in (60 for per-minute limits)."""
    wait_sla_s: float = Field(default=600.0, gt=0)
    """A step that waited longer than this for the resource is late: exported as
    ``mesh_ratelimit_wait_sla_seconds`` and alerted on (MeshFlowWaitOverSla)."""

    @model_validator(mode="after")
    def _some_budget(self) -> LimitSpec:
        if self.requests_per_interval is None and self.tokens_per_interval is None:
            raise ValueError("a limit needs requests_per_interval, tokens_per_interval or both")
        return self


class FlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    """Rate limits by resource name (JSON). Undeclared resources are unlimited."""
    concurrency: dict[str, int] = Field(default_factory=dict)
    """At most N running steps per key, by concurrency name (JSON, e.g.
    ``{"content.customer": 1}``). Undeclared names are unlimited."""
    concurrency_wait_sla_s: float = Field(default=3600.0, gt=0)
    """A step that waited longer than this for a concurrency slot is late (alerted on)."""
    tenant_weights: dict[str, float] = Field(default_factory=dict)
    """Weighted fair share: a tenant's weight (default 1.0). A tenant of weight 2 gets
    twice the share of a contended resource that a tenant of weight 1 gets."""
    llm_resource: str = "llm"
    """The resource the built-in content workflow's LLM calls count against."""
    clock_margin_s: float = Field(default=1.0, ge=0, le=60)
    """Safety margin added to every window: an admitted call may reach the provider up
    to this much later than its admission (queueing, network) without the provider
    ever counting more than its limit in one of its windows. Costs
    ``margin / (interval + margin)`` of the throughput."""
    ticket_grace_s: float = Field(default=5.0, gt=0, le=3600)
    """A waiting step keeps its place in line until this long after its expected wake-up
    time; a step that does not come back by then (its worker died) stops blocking the
    steps behind it."""
    ticket_ttl_s: int = Field(default=3600, ge=60)
    """How long a waiting step's fair-share tag survives in Redis (a late step that
    comes back within this keeps its place)."""
    lease_s: float = Field(default=60.0, gt=0)
    """Concurrency lease: renewed every third of this while the step runs; a worker that
    dies frees its slot at most this long after its last renewal."""
    max_wait_step_s: float = Field(default=300.0, gt=0)
    """Longest single reschedule of a waiting step (it then asks again); also capped at
    half of ``celery.visibility_timeout_s`` so a delayed message is never redelivered."""
    burst_fraction: float = Field(default=0.1, ge=0, le=1)
    """Share of a window's budget that may go at once after a lull; the rest is paced
    evenly over the window (so an urgent step never finds a whole window spent)."""
    min_wait_s: float = Field(default=0.05, gt=0)
    """Shortest wait handed to a step (avoids spinning on a nearly free budget)."""
    usage_ewma_alpha: float = Field(default=0.2, gt=0, le=1)
    """Weight of the newest call in the running average of real tokens per request,
    used to predict when waiting steps get their turn."""

    @field_validator("limits", "concurrency", "tenant_weights")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        bad = [k for k in value if not NAME_RE.match(k)]
        if bad:
            raise ValueError(f"invalid name(s) {bad}: use 1-80 of [A-Za-z0-9_.:@/-]")
        return value

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in value.items() if n < 1]
        if bad:
            raise ValueError(f"concurrency limit(s) of {bad} must be >= 1")
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in value.items() if not 0.01 <= w <= 1000]
        if bad:
            raise ValueError(f"tenant weight(s) of {bad} must be within 0.01..1000")
        return value

    def weight(self, tenant: str) -> float:
        return self.tenant_weights.get(tenant, 1.0)
