"""Model lifecycle steps around ``training``: retraining from a request, the scheduled
request, and announcing a promotion (``model.promoted``), which the dispatcher turns
into the batch rescoring (``churn-rescore``)."""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ModelPromoted, ModelRetrainRequested
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.churn.training import train_and_maybe_promote

RESCORE_WORKFLOW = "churn-rescore"
PROMOTED_NAMESPACE = uuid.UUID("3c0e6d1a-5f2b-4e8a-9d47-1b6f0a2c9e55")


def seed_of(event_id: str) -> int:
    """The data seed of a retraining: derived from its event, so a redelivered request
    trains on the same data and produces the same version (content hash)."""
    return zlib.crc32(event_id.encode()) & 0x7FFFFFFF


def retrain(rt: Any, meta: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Train, compare, maybe promote; after a promotion start the rescoring."""
    wf = rt.settings.workflows
    svc = services(rt)
    outcome = train_and_maybe_promote(
        svc.registry, samples=int(request.get("samples") or wf.retrain_samples),
        seed=seed_of(request["event_id"]), holdout_fraction=wf.retrain_holdout_fraction,
        max_auc_drop=wf.retrain_max_auc_drop, reason=str(request.get("reason", "")),
        provenance={"event_id": request["event_id"], **meta},
    )
    out = outcome.as_dict() | {"event_id": request["event_id"], "rescore_run_id": None,
                               "promoted_event_id": None}
    if outcome.promoted:
        ptr = svc.registry.promoted()
        if ptr is not None:
            env = promoted_event(ptr.version, ptr.seq, outcome.current_version,
                                 f"retrain: {request.get('reason', '')}"[:500],
                                 rescore=wf.churn_rescore_after_promotion, producer="retrain")
            out["promoted_event_id"] = rt.publisher.publish(env)
            out["rescore_run_id"] = rescore_run_id(env) if wf.churn_rescore_after_promotion else None
    return out


def promoted_event(version: str, seq: int, previous: str | None, reason: str, *,
                   rescore: bool = True, producer: str = "cli", again: str = "") -> Envelope:
    """``model.promoted`` for promotion ``seq``: its event id and idempotency key derive
    from the promotion (a retried publish is one event for the dispatcher); ``again``
    makes a deliberate second announcement of the same promotion (``mesh models
    rescore``) a new event."""
    key = f"model.promoted:churn:{seq}" + (f":{again}" if again else "")
    event = ModelPromoted(version=version, seq=seq, previous_version=previous, reason=reason[:500],
                          rescore=rescore)
    return Envelope.wrap(event, idempotency_key=key, producer=producer,
                         event_id=uuid.uuid5(PROMOTED_NAMESPACE, key).hex)


def rescore_run_id(env: Envelope) -> str:
    """The run id the dispatcher gives the rescoring of ``env`` (deterministic)."""
    from worker_mesh.chains.churn_rescore import WORKFLOW  # registers the workflow in this process
    from worker_mesh.chains.registry import REGISTRY

    return REGISTRY.get(WORKFLOW).run_id(env)


def scheduled_request(rt: Any, now: datetime | None = None) -> str:
    """Publish the scheduled ``model.retrain_requested`` (one per hour at most: the
    idempotency key names the hour, so a re-sent beat tick is deduplicated)."""
    now = now or datetime.now(UTC)
    key = f"model.retrain_requested:churn:scheduled:{now:%Y-%m-%dT%H}"
    event = ModelRetrainRequested(reason="scheduled", samples=rt.settings.workflows.retrain_samples)
    return rt.publisher.publish(Envelope.wrap(event, idempotency_key=key, producer="beat"))  # type: ignore[no-any-return]


def ensure_model(settings: Any, *, samples: int | None = None, seed: int = 7) -> str:
    """Train and promote a first churn model when none is promoted (the demo's set-up,
    a fresh environment). Returns a one-line note for a summary."""
    from worker_mesh.workers.runtime import Runtime

    rt = Runtime(settings)
    registry = services(rt).registry
    ptr = registry.promoted()
    if ptr is not None:
        return f"churn model {ptr.version} already promoted"
    wf = settings.workflows
    out = train_and_maybe_promote(registry, samples=samples or wf.retrain_samples, seed=seed,
                                  holdout_fraction=wf.retrain_holdout_fraction,
                                  reason="first model", provenance={"producer": "ensure_model"})
    return (f"churn model {out.candidate_version} trained and promoted "
            f"(held-out ROC AUC {out.candidate_metrics['roc_auc']:.3f})")
