"""Model registry, promotion rule and the per-process model cache (real Redis, real
training, local artifact store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker_mesh.mesh.errors import NotFound, PermanentError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.churn import synth
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.churn.training import decide, train_and_maybe_promote
from worker_mesh.workers.runtime import Runtime


@pytest.fixture
def rt(settings: MeshSettings) -> Runtime:
    return Runtime(settings)


def test_first_model_is_promoted_and_stored_with_its_metrics(rt: Runtime, tmp_path: Path) -> None:
    reg = services(rt).registry
    out = train_and_maybe_promote(reg, samples=1200, seed=1)
    assert out.promoted and out.current_version is None
    assert out.candidate_metrics["roc_auc"] > 0.75
    ptr = reg.promoted()
    assert ptr is not None and ptr.version == out.candidate_version and ptr.seq == 1
    [listed] = reg.versions()
    assert listed["promoted"] and listed["metrics"]["roc_auc"] == out.candidate_metrics["roc_auc"]
    artifact = tmp_path / "artifacts" / "models" / "churn" / f"{out.candidate_version}.json"
    assert artifact.is_file()
    assert json.loads(artifact.with_suffix(".metrics.json").read_text())["metrics"]["n"] == 300


def test_a_worse_candidate_is_kept_out_and_both_metrics_recorded(rt: Runtime) -> None:
    reg = services(rt).registry
    good = train_and_maybe_promote(reg, samples=2000, seed=2)
    # A broken data pipeline: nine in ten training labels are coin flips.
    bad = train_and_maybe_promote(reg, samples=2000, seed=3, train_label_noise=0.9)
    assert not bad.promoted
    assert bad.current_version == good.candidate_version
    assert bad.current_metrics is not None
    assert bad.candidate_metrics["roc_auc"] < bad.current_metrics["roc_auc"]
    assert bad.candidate_metrics["n"] == bad.current_metrics["n"]  # the same held-out set
    assert reg.promoted().version == good.candidate_version  # type: ignore[union-attr]
    kept = reg.history()[0]
    assert kept["event"] == "kept" and kept["current_metrics"]["roc_auc"] > 0
    record = reg.get(bad.candidate_version)
    assert record["evaluation"]["against"] == good.candidate_version


def test_a_candidate_not_worse_is_promoted(rt: Runtime) -> None:
    reg = services(rt).registry
    train_and_maybe_promote(reg, samples=600, seed=4, train_label_noise=0.9)
    better = train_and_maybe_promote(reg, samples=3000, seed=5)
    assert better.promoted and better.seq == 2
    assert better.candidate_metrics["roc_auc"] >= better.current_metrics["roc_auc"]  # type: ignore[index]


def test_decision_rule() -> None:
    assert decide(0.80, None, 0.0)[0]
    assert decide(0.80, 0.80, 0.0)[0]
    assert not decide(0.799, 0.80, 0.0)[0]
    assert decide(0.795, 0.80, 0.01)[0]


def test_scoring_follows_the_pointer_and_caches_the_model(rt: Runtime) -> None:
    svc = services(rt)
    with pytest.raises(NotFound, match="mesh train"):
        svc.model.get()
    first = train_and_maybe_promote(svc.registry, samples=800, seed=6)
    ptr, _ = svc.model.get()
    assert ptr.version == first.candidate_version and svc.model.loads == 1
    svc.model.get()
    assert svc.model.loads == 1  # same pointer: no reload
    second = train_and_maybe_promote(svc.registry, samples=3000, seed=7, max_auc_drop=1.0)
    assert second.promoted
    assert svc.model.get()[0].version == second.candidate_version and svc.model.loads == 2
    # Rollback: the old version is served again, under a new promotion number.
    svc.registry.promote(first.candidate_version, "rollback")
    ptr, _ = svc.model.get()
    assert (ptr.version, ptr.seq) == (first.candidate_version, 3)


def test_tampered_artifact_is_refused(rt: Runtime, tmp_path: Path) -> None:
    reg = services(rt).registry
    out = train_and_maybe_promote(reg, samples=600, seed=8)
    path = tmp_path / "artifacts" / "models" / "churn" / f"{out.candidate_version}.json"
    path.write_bytes(path.read_bytes().replace(b'"intercept":', b'"intercept":1e-9+'))
    with pytest.raises(PermanentError, match="sha256"):
        reg.load(out.candidate_version)
    with pytest.raises(NotFound):
        reg.promote("0000000000000000")


def test_synthetic_label_noise_only_touches_labels() -> None:
    d = synth.dataset(500, seed=9)
    noisy = synth.with_label_noise(d, 1.0, seed=9)
    assert noisy.profiles is d.profiles and (noisy.labels != d.labels).any()


def test_ensure_model_trains_once(settings: MeshSettings) -> None:
    from worker_mesh.workers.churn.lifecycle import ensure_model

    first = ensure_model(settings, samples=600)
    assert "trained and promoted" in first and "ROC AUC" in first
    assert "already promoted" in ensure_model(settings, samples=600)
