"""The churn model: real training on synthetic data, JSON export, content-hash versions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker_mesh.mesh.errors import PermanentError
from worker_mesh.workers.churn import features as F
from worker_mesh.workers.churn import model as M
from worker_mesh.workers.churn import synth


@pytest.fixture(scope="module")
def trained() -> tuple[M.ChurnModel, object, synth.Dataset]:
    train, holdout = synth.dataset(3000, seed=11).split(0.3)
    model, pipe = M.fit(train.profiles, train.labels, seed=11)
    return model, pipe, holdout


def test_synthetic_labels_follow_the_documented_relation() -> None:
    # Given many customers, the churn rate among the riskiest tenth (by the true relation)
    # is far above the rate among the safest tenth.
    data = synth.dataset(4000, seed=3)
    p = np.array([synth.churn_probability(x) for x in data.profiles])
    order = np.argsort(p)
    tenth = len(p) // 10
    assert data.labels[order[-tenth:]].mean() > 3 * data.labels[order[:tenth]].mean()
    assert 0.1 < data.labels.mean() < 0.4


def test_training_learns_real_signal(trained: tuple[M.ChurnModel, object, synth.Dataset]) -> None:
    model, _, holdout = trained
    metrics = M.evaluate(model, holdout.profiles, holdout.labels)
    assert metrics["roc_auc"] > 0.78, metrics   # chance is 0.5; the best possible ~0.84
    assert metrics["n"] == len(holdout.profiles)
    # The signs match the documented relation: failed payments raise risk, activity lowers it.
    coef = dict(zip(model.features, model.coef, strict=True))
    assert coef["failed_payments_90d"] > 0 > coef["active_days_30d"]


def test_json_export_scores_like_the_sklearn_pipeline(trained: tuple[M.ChurnModel, object,
                                                                     synth.Dataset]) -> None:
    model, pipe, holdout = trained
    x = F.matrix(holdout.profiles)
    np.testing.assert_allclose(model.predict(x), pipe.predict_proba(x)[:, 1], rtol=0, atol=1e-12)


def test_json_round_trip_gives_identical_scores_and_version(
        trained: tuple[M.ChurnModel, object, synth.Dataset]) -> None:
    model, _, holdout = trained
    data = model.to_json()
    again = M.ChurnModel.from_json(data)
    x = F.matrix(holdout.profiles)
    assert np.array_equal(again.predict(x), model.predict(x))
    assert again.to_json() == data and again.version == model.version == M.version_of(data)
    assert json.loads(data)["format"] == M.FORMAT  # plain JSON numbers, nothing executable


def test_version_is_a_content_hash() -> None:
    d = synth.dataset(600, seed=5)
    a, _ = M.fit(d.profiles, d.labels, seed=5)
    b, _ = M.fit(d.profiles, d.labels, seed=5)
    other = synth.dataset(600, seed=6)
    c, _ = M.fit(other.profiles, other.labels, seed=6)
    assert a.version == b.version != c.version
    assert len(a.version) == 16


def test_an_artifact_with_other_features_is_refused(
        trained: tuple[M.ChurnModel, object, synth.Dataset]) -> None:
    doc = json.loads(trained[0].to_json())
    doc["features"] = [*doc["features"][:-1], "something_else"]
    with pytest.raises(PermanentError, match="retrain"):
        M.ChurnModel.from_json(json.dumps(doc).encode())
    with pytest.raises(PermanentError):
        M.ChurnModel.from_json(b"not json")


def test_features_impute_missing_fields_and_say_so() -> None:
    normalized, imputed = F.normalize({"logins_30d": b"3", "active_days_30d": "2",
                                       "as_of": "2026-11-01", "_rev": "4"})
    assert normalized["logins_30d"] == 3 and normalized["plan"] == "starter"
    assert set(imputed) >= {"plan", "seats", "mrr", "signup_date"}
    assert F.vector({"plan": "pro"}).shape == (len(F.FEATURES),)
    with pytest.raises(PermanentError):
        F.normalize({"seats": "many"})


def test_risky_customer_scores_above_loyal_one(trained: tuple[M.ChurnModel, object,
                                                              synth.Dataset]) -> None:
    model = trained[0]
    risky, loyal = model.score_profiles([synth.risky_profile("a"), synth.loyal_profile("b")])
    assert risky > 0.8 > 0.1 > loyal
