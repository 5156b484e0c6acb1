"""The churn model: trained with scikit-learn, stored and served as JSON parameters.

Why JSON and not a serialized Python estimator object: loading such an object executes
code, ties the artifact to library versions and cannot be reviewed. A standardised
logistic regression is fully described by a handful of numbers (per-feature mean and
scale, coefficients, intercept), which score identically in plain numpy. The artifact's bytes are canonical
JSON (sorted keys, no whitespace), so the version id, ``sha256(bytes)``, names exactly
these parameters: training the same data twice gives the same version.

Why logistic regression: the synthetic relation is logistic in these features, so the
model can approach the best possible ROC AUC (see docs/churn.md), and its coefficients
are readable by the people acting on the scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker_mesh.mesh.errors import PermanentError
from worker_mesh.mesh.extras import require
from worker_mesh.workers.churn import features as F

FORMAT = "mesh-churn-logreg/1"


@dataclass(frozen=True)
class ChurnModel:
    """A standardised logistic regression, scored in numpy."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    """Training facts (samples, seed, library version); part of the artifact."""

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == n):
            raise PermanentError("churn model parameters have mismatched lengths")
        object.__setattr__(self, "_mean", np.asarray(self.mean, dtype=np.float64))
        object.__setattr__(self, "_scale", np.asarray(self.scale, dtype=np.float64))
        object.__setattr__(self, "_coef", np.asarray(self.coef, dtype=np.float64))

    # -- scoring -------------------------------------------------------------------
    def decision(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self._mean) / self._scale  # type: ignore[attr-defined]
        return z @ self._coef + self.intercept  # type: ignore[attr-defined,no-any-return]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Churn probabilities of the rows of a feature matrix."""
        d = self.decision(x)
        return 1.0 / (1.0 + np.exp(-d))  # type: ignore[no-any-return]

    def score_profiles(self, profiles: list[dict[str, Any]]) -> np.ndarray:
        return self.predict(F.matrix(profiles))

    # -- serialization -------------------------------------------------------------
    def to_json(self) -> bytes:
        """Canonical JSON bytes (the artifact)."""
        doc = {
            "format": FORMAT,
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "info": self.info,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    @property
    def version(self) -> str:
        return version_of(self.to_json())

    @classmethod
    def from_json(cls, data: bytes) -> ChurnModel:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown model format {doc.get('format')!r}")
            model = cls(tuple(doc["features"]), tuple(doc["mean"]), tuple(doc["scale"]),
                        tuple(doc["coef"]), float(doc["intercept"]), dict(doc.get("info", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"churn model artifact is not readable: {exc}") from exc
        if model.features != F.FEATURES:
            raise PermanentError(
                f"churn model was trained on features {list(model.features)}, this code "
                f"computes {list(F.FEATURES)}: retrain it (mesh train)")
        return model


def version_of(artifact: bytes) -> str:
    """The version id: the first 16 hex digits of the artifact's sha256."""
    return hashlib.sha256(artifact).hexdigest()[:16]


def fit(profiles: list[dict[str, Any]], labels: np.ndarray, *, seed: int = 0,
        info: dict[str, Any] | None = None) -> tuple[ChurnModel, Any]:
    """Train on profiles; returns the JSON-servable model and the scikit-learn pipeline
    it was exported from (tests compare the two)."""
    require("sklearn", "churn")
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = F.matrix(profiles)
    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        raise PermanentError("training data has a single class: cannot fit a churn model")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000,
                                                               random_state=seed))
    pipe.fit(x, y)
    scaler, lr = pipe[0], pipe[1]
    model = ChurnModel(
        features=F.FEATURES,
        mean=tuple(float(v) for v in scaler.mean_),
        scale=tuple(float(v) for v in scaler.scale_),
        coef=tuple(float(v) for v in lr.coef_[0]),
        intercept=float(lr.intercept_[0]),
        info={"algorithm": "standard_scaler+logistic_regression", "samples": len(y),
              "seed": seed, "sklearn": sklearn.__version__, **(info or {})},
    )
    return model, pipe


def evaluate(model: ChurnModel, profiles: list[dict[str, Any]], labels: np.ndarray) -> dict[str, float]:
    """Held-out metrics: ROC AUC (ranking, what the threshold relies on), log loss and
    Brier score (calibration), positive rate and size of the set."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    p = model.score_profiles(profiles)
    y = np.asarray(labels)
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 6),
        "log_loss": round(float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1])), 6),
        "brier": round(float(brier_score_loss(y, p)), 6),
        "positive_rate": round(float(y.mean()), 6),
        "n": len(y),
    }
