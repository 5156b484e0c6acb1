"""The churn score step's batch function against a real Redis: one predict for many
customers, the same scores as one at a time, a corrupt profile failing only its item."""

from __future__ import annotations

import pytest

from worker_mesh.mesh.errors import PermanentError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.churn import scoring, synth
from worker_mesh.workers.churn.training import train_and_maybe_promote
from worker_mesh.workers.runtime import Runtime


def test_batch_scores_equal_single_scores_and_a_corrupt_profile_fails_alone(
        settings: MeshSettings) -> None:
    rt = Runtime(settings)
    svc = scoring.services(rt)
    train_and_maybe_promote(svc.registry, samples=800, seed=3)
    profiles = synth.customers(4, seed=2, prefix="s")
    for p in profiles:
        svc.profiles.put(p)
    rt.redis.hset(svc.profiles.key(profiles[2]["customer_id"]), "seats", "many")  # corrupt
    meta = {"run_id": "r", "workflow": "churn", "workflow_version": "1"}
    items = [({"customer_id": p["customer_id"], "profile_revision": 1, "event_id": "e"}, meta)
             for p in profiles]

    out = scoring.score_many(rt, items)

    assert isinstance(out[2], PermanentError)
    for i in (0, 1, 3):
        row = out[i]
        assert isinstance(row, dict)
        single = scoring.score(rt, *items[i])
        assert row["score"] == pytest.approx(single.pop("score"), rel=1e-12)  # matrix vs row
        assert {k: v for k, v in row.items() if k != "score"} == single
        assert 0.0 <= row["score"] <= 1.0
    with pytest.raises(PermanentError):
        scoring.score(rt, *items[2])
