"""The content-generation steps as plain typed functions (``workers/tasks/content.py``
wraps them; tests call them directly).

``generate`` runs the attempt loop: generate -> SEO check -> on failure generate again
with the failed checks as feedback, up to ``workflows.content_max_attempts``, then
dead-letter the triggering event (reason code ``quality_failed``) and fail for good.
Attempts are recorded in Redis per run, so a provider error that makes Celery retry
the task (429, 5xx) resumes at the same attempt with the same feedback instead of
starting over, and the attempt limit holds across retries and redeliveries.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentUpdated
from worker_mesh.mesh.errors import QualityCheckFailed
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import metrics
from worker_mesh.workers.content import flowctl as content_flow
from worker_mesh.workers.content import seo
from worker_mesh.workers.content.prompt import Brief, brief_from_event
from worker_mesh.workers.content.providers import Generation, GenerationRequest, Provider, make_provider
from worker_mesh.workers.content.store import ContentStore
from worker_mesh.workers.flowctl import flow_control

log = logging.getLogger(__name__)

PROVIDER_SERVICE = "content.provider"
ATTEMPTS_TTL_S = 7 * 86_400
PUBLISH_NAMESPACE = uuid.UUID("2b8f6c1e-4d7a-4f0b-9a63-5c1d2e3f4a5b")


def prepare(settings: MeshSettings, event_type: str, payload: dict[str, Any],
            event_id: str = "") -> dict[str, Any]:
    """The brief (what to write) for a triggering event."""
    return brief_from_event(settings, event_type, payload, event_id).as_dict()


def get_provider(rt: Any) -> Provider:
    """The process's provider (one HTTP connection pool per worker process)."""
    return rt.service(PROVIDER_SERVICE, lambda r: make_provider(r.settings.llm))  # type: ignore[no-any-return]


def check(settings: MeshSettings, brief: Brief, text: str) -> seo.SeoReport:
    wf = settings.workflows
    return seo.analyze(text, keywords=brief.keywords, min_words=brief.min_words,
                       banned_phrases=wf.content_banned_phrases,
                       min_readability=wf.content_min_readability,
                       max_chars=settings.llm.max_output_chars)


class Attempts:
    """The attempts of one run, in a Redis list (JSON entries)."""

    def __init__(self, rt: Any, run_id: str) -> None:
        self._r = rt.redis
        self.key = rt.keys.ns("content", "attempts", run_id)

    def load(self) -> list[dict[str, Any]]:
        with translate_errors("content attempts"):
            return [json.loads(x) for x in self._r.lrange(self.key, 0, -1)]

    def add(self, entry: dict[str, Any]) -> None:
        with translate_errors("content attempts"):
            pipe = self._r.pipeline(transaction=True)
            pipe.rpush(self.key, json.dumps(entry))
            pipe.expire(self.key, ATTEMPTS_TTL_S)
            pipe.execute()


def generate(rt: Any, brief_d: dict[str, Any], meta: dict[str, Any],
             wire: dict[str, str] | None = None,
             provider: Provider | None = None) -> dict[str, Any]:
    """Generate until the checks pass; returns the draft. Raises QualityCheckFailed
    (after dead-lettering) when every attempt failed, ``Throttled`` when the LLM budget
    or the customer's concurrency slot says "later" (the task reschedules it), and lets
    provider errors (RateLimited, ProviderError) through for the task's retry policy."""
    brief = Brief.from_dict(brief_d)
    provider = provider or get_provider(rt)
    attempts = Attempts(rt, meta["run_id"])
    history = attempts.load()
    if history and history[-1]["passed"]:
        return history[-1]["draft"]  # type: ignore[no-any-return]
    fc = flow_control(rt)
    ticket = content_flow.step_id(meta)
    with fc.enter(content_flow.STEP_FLOW, {"brief": brief_d, "meta": meta}, step_id=ticket):
        return _attempts(rt, brief, meta, wire, attempts, history,
                         lambda req: content_flow.call(fc, provider, req, ticket=ticket))


def _attempts(rt: Any, brief: Brief, meta: dict[str, Any], wire: dict[str, str] | None,
              attempts: Attempts, history: list[dict[str, Any]],
              call: Callable[[GenerationRequest], Generation]) -> dict[str, Any]:
    """The attempt loop of ``generate``, resuming after ``history`` (inside the step's
    flow-control admission; ``call`` asks the LLM budget before each provider call)."""
    settings: MeshSettings = rt.settings
    max_attempts = settings.workflows.content_max_attempts
    feedback: list[str] = history[-1]["feedback"] if history else []
    failed: list[dict[str, Any]] = history[-1]["failed"] if history else []
    for attempt in range(len(history) + 1, max_attempts + 1):
        gen = call(GenerationRequest(
            brief, attempt, feedback, failed, list(settings.workflows.content_banned_phrases)))
        report = check(settings, brief, gen.text)
        draft = {"brief": brief.as_dict(), "title": gen.title, "body": gen.text,
                 "model_version": gen.model_version, "attempts": attempt,
                 "seo": report.as_dict(), "feedback_history": [h["feedback"] for h in history]}
        entry = {"attempt": attempt, "passed": report.passed, "feedback": report.feedback,
                 "failed": [{"name": c.name, "data": c.data} for c in report.failed]}
        if report.passed:
            attempts.add(entry | {"draft": draft})
            return draft
        log.info("content %s attempt %d failed checks: %s", brief.content_id, attempt,
                 "; ".join(report.feedback))
        attempts.add(entry)
        history.append(entry)
        feedback, failed = report.feedback, list(entry["failed"])  # type: ignore[call-overload]
    reason = (f"content {brief.content_id} failed its quality checks {max_attempts} times; "
              "last: " + "; ".join(feedback))
    _dead_letter(rt, meta, brief, wire or {}, reason)
    raise QualityCheckFailed(reason)


def _dead_letter(rt: Any, meta: dict[str, Any], brief: Brief, wire: dict[str, str],
                 reason: str) -> None:
    """End the run as failed and dead-letter the triggering event once, as
    ``quality_failed`` (the run's failure callback then finds the run ended and does
    not dead-letter it again as a generic ``workflow_failed``)."""
    from worker_mesh.events.dlq import DeadLetters

    run_id = meta["run_id"]
    workflow = str(meta.get("workflow") or "content")
    with translate_errors("content dead-letter"):
        if not rt.ledger.fail_once(run_id, reason, claimer=f"quality:{run_id}"):
            return
    dlq_id = DeadLetters(rt.redis, rt.keys, rt.settings.streams).add(
        "quality_failed", reason, wire or {"type": "", "id": brief.event_id},
        source="mesh.content.generate", error=f"QualityCheckFailed: {reason}",
        workflow=workflow, run_id=run_id, step="generate")
    rt.ledger.dead_lettered(run_id, dlq_id)
    metrics.workflow_run(workflow, "failed")


def publish(rt: Any, draft: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Store the draft as the next version (once per run) and publish
    ``content.updated`` (source ``generated``), which starts re-embedding.

    The event id and idempotency key derive from the run and version, so a
    redelivered publish is deduplicated by the dispatcher instead of running twice.
    """
    brief = Brief.from_dict(draft["brief"])
    record = {"title": draft["title"], "body": draft["body"], "kind": brief.kind,
              "model_version": draft["model_version"], "attempts": draft["attempts"],
              "seo": draft["seo"], "event_id": brief.event_id,
              "customer_id": brief.customer_id, **meta}
    saved = ContentStore(rt.redis, rt.keys).save(brief.content_id, meta["run_id"], record)
    event = ContentUpdated(content_id=brief.content_id, title=draft["title"][:500],
                           body=draft["body"], version=saved.version,
                           tags=["generated", brief.kind], source="generated")
    env = Envelope.wrap(
        event, idempotency_key=f"{brief.content_id}:generated:v{saved.version}",
        producer="mesh.content",
        event_id=uuid.uuid5(PUBLISH_NAMESPACE, f"{meta['run_id']}:v{saved.version}").hex)
    published = rt.publisher.publish(env)
    metrics.result_updated("content", brief.content_id)
    return {"content_id": brief.content_id, "version": saved.version, "created": saved.created,
            "published_event_id": published, "model_version": draft["model_version"],
            "attempts": draft["attempts"], "event_id": brief.event_id,
            **{k: meta.get(k) for k in ("run_id", "workflow", "workflow_version")}}
