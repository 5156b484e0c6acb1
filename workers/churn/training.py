"""Training a candidate and deciding whether it replaces the promoted model.

One function serves ``mesh train``, the ``model.retrain_requested`` workflow and the beat
schedule, so the rule is the same everywhere: the candidate and the current promoted
model are scored on the SAME held-out set (the candidate never saw it), and the
candidate is promoted only if its ROC AUC is not worse (``>= current - max_auc_drop``).
Both metrics are recorded, whatever the decision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from worker_mesh.mesh.errors import MeshError
from worker_mesh.workers.churn import model as M
from worker_mesh.workers.churn import synth
from worker_mesh.workers.churn.registry import ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    candidate_version: str
    candidate_metrics: dict[str, Any]
    current_version: str | None
    current_metrics: dict[str, Any] | None
    promoted: bool
    reason: str
    seq: int | None = None
    """Promotion sequence number when promoted."""
    samples: int = 0
    seed: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(candidate_auc: float, current_auc: float | None, max_auc_drop: float) -> tuple[bool, str]:
    """(promote?, why). No current model: promote."""
    if current_auc is None:
        return True, "no promoted model yet"
    if candidate_auc >= current_auc - max_auc_drop:
        return True, f"candidate AUC {candidate_auc:.4f} >= current {current_auc:.4f} - {max_auc_drop}"
    return False, f"candidate AUC {candidate_auc:.4f} < current {current_auc:.4f} - {max_auc_drop}"


def train_and_maybe_promote(
    registry: ModelRegistry,
    *,
    samples: int,
    seed: int,
    holdout_fraction: float = 0.25,
    max_auc_drop: float = 0.0,
    reason: str = "on demand",
    provenance: dict[str, Any] | None = None,
    train_label_noise: float = 0.0,
) -> TrainingOutcome:
    """Generate ``samples`` customers (seeded), train on the training part, evaluate the
    candidate and the promoted model on the held-out part, register the candidate with
    both metrics, promote it if not worse.

    ``train_label_noise`` flips that share of the *training* labels (never the held-out
    ones): a drill of a broken data pipeline, which the comparison must catch."""
    t0 = time.perf_counter()
    data = synth.dataset(samples, seed)
    train, holdout = data.split(holdout_fraction)
    if train_label_noise > 0:
        train = synth.with_label_noise(train, train_label_noise, seed)
    candidate, _ = M.fit(train.profiles, train.labels, seed=seed,
                         info={"data_seed": seed, "holdout_fraction": holdout_fraction})
    cand_metrics = M.evaluate(candidate, holdout.profiles, holdout.labels)

    ptr = registry.promoted()
    cur_metrics: dict[str, Any] | None = None
    if ptr is not None and ptr.version != candidate.version:
        try:
            cur_metrics = M.evaluate(registry.load(ptr.version), holdout.profiles, holdout.labels)
        except MeshError as exc:
            # The current model cannot be loaded (artifact gone, features changed): it
            # cannot be compared, so it cannot block a working candidate.
            log.warning("current churn model %s cannot be evaluated: %s", ptr.version, exc)
            cur_metrics = {"error": str(exc)}
    comparison = {"holdout_n": cand_metrics["n"], "data_seed": seed, "samples": samples}
    registry.register(candidate, cand_metrics, {
        "evaluation": {**comparison, "against": ptr.version if ptr else None,
                       "against_metrics": cur_metrics},
        "provenance": provenance or {},
    })

    if ptr is not None and ptr.version == candidate.version:
        promote, why = False, "candidate is the promoted model already (same content hash)"
    else:
        cur_auc = None if not cur_metrics or "roc_auc" not in cur_metrics else cur_metrics["roc_auc"]
        promote, why = decide(cand_metrics["roc_auc"], cur_auc, max_auc_drop)
    seq = None
    if promote:
        seq = registry.promote(candidate.version, f"{reason}: {why}").seq
    else:
        registry.record({"event": "kept", "candidate": candidate.version,
                         "current": ptr.version if ptr else None, "why": why,
                         "candidate_metrics": cand_metrics, "current_metrics": cur_metrics})
    return TrainingOutcome(
        candidate_version=candidate.version, candidate_metrics=cand_metrics,
        current_version=ptr.version if ptr else None, current_metrics=cur_metrics,
        promoted=promote, reason=why, seq=seq, samples=samples, seed=seed,
        seconds=round(time.perf_counter() - t0, 3),
    )
