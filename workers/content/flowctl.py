"""Flow control of the content generator: what its ``generate`` step declares and how
each LLM call asks for budget.

- The step holds a concurrency slot per customer (``flow.concurrency["content.customer"]``,
  e.g. 1: one generation per customer at a time) for all its attempts.
- Each provider call asks the LLM resource (``flow.llm_resource``) for one request and
  its token estimate (prompt + ``max_tokens``), then reconciles with the ``usage`` the
  provider reported. A 429 pauses the resource for every worker (its ``Retry-After``)
  and the step waits its turn again, without spending a failure retry.
- Fair share is by customer (the tenant); the priority comes from the request
  (``urgent`` / ``normal`` / ``bulk``).

With no limit declared for the resource (the default), none of this touches Redis and
a 429 is retried by the task's API-call policy as before.
"""

from __future__ import annotations

from typing import Any

from worker_mesh.mesh.errors import RateLimited, Throttled
from worker_mesh.mesh.flow import Concurrency, Flow, FlowControl, Priority
from worker_mesh.workers.content.prompt import Brief
from worker_mesh.workers.content.providers import Generation, GenerationRequest, Provider

CUSTOMER_CONCURRENCY = "content.customer"
DEFAULT_PAUSE_S = 1.0
"""Pause after a 429 without ``Retry-After``."""

STEP_FLOW = Flow(
    concurrency=(Concurrency(CUSTOMER_CONCURRENCY, key=lambda a: a["brief"].get("customer_id")),),
    tenant=lambda a: a["brief"].get("customer_id"),
    priority=lambda a: a["brief"].get("priority"),
)
"""What ``mesh.content.generate`` declares (LLM calls are limited per call, below)."""


def step_id(meta: dict[str, Any]) -> str:
    """The generate step's id: its Celery task id (``<run id>:generate``), stable across
    reschedules, so the step keeps its place in line."""
    return f"{meta['run_id']}:generate"


def call(fc: FlowControl, provider: Provider, req: GenerationRequest, *, ticket: str) -> Generation:
    """One provider call within the LLM budget; raises ``Throttled`` when its turn is
    later (or the provider said 429), the provider's own errors otherwise."""
    brief: Brief = req.brief
    resource = fc.settings.llm_resource
    estimate = getattr(provider, "estimate_tokens", None)
    tokens = int(estimate(req)) if estimate is not None else 0
    permit = fc.permit(resource, ticket=ticket, tokens=tokens,
                       tenant=brief.customer_id or "default",
                       priority=Priority.parse(brief.priority))
    try:
        gen = provider.generate(req)
    except RateLimited as exc:
        permit.reconcile(0)  # refused: no tokens used (the request still counts)
        if fc.rates.spec(resource) is None:
            raise
        paused = fc.pause(resource, exc.delay_s if exc.delay_s is not None else DEFAULT_PAUSE_S)
        raise Throttled(f"LLM provider answered 429; {resource} paused {paused:.1f} s",
                        delay_s=paused, what=resource) from None
    if gen.tokens_used is not None and permit.permit_id:
        fc.observer.tokens(resource, tokens, gen.tokens_used)
        permit.reconcile(gen.tokens_used)
    return gen
