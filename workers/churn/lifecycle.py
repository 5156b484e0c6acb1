"""Model lifecycle steps around ``training``: retraining from a request, the scheduled
request, and starting the batch rescoring after a promotion."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ModelRetrainRequested
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.churn.training import train_and_maybe_promote

RESCORE_WORKFLOW = "churn-rescore"


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
    out = outcome.as_dict() | {"event_id": request["event_id"], "rescore_run_id": None}
    if outcome.promoted and wf.churn_rescore_after_promotion and rt.app is not None:
        cause = Envelope.wrap(ModelRetrainRequested(reason=str(request.get("reason", ""))[:500]),
                              event_id=request["event_id"], producer="retrain")
        out["rescore_run_id"] = start_rescore(rt.app, cause)
    return out


def start_rescore(app: Any, cause: Envelope) -> str:
    """Start the ``churn-rescore`` chord; its run id derives from the causing event."""
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.chains.starter import CeleryStarter, StartRequest

    registry = load_workflows(app.mesh_settings)
    starter = CeleryStarter(app, registry)
    run_id = starter.run_id(RESCORE_WORKFLOW, cause)
    starter.start(StartRequest(RESCORE_WORKFLOW, cause, run_id))
    return run_id


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
