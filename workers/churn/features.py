"""The feature vector of a customer profile: one code path for training and serving.

A profile is what the profile store holds (``workers.stores.profiles``) and what the
synthetic generator produces: plain fields, possibly strings (Redis hashes hold bytes),
possibly incomplete (an activity event may arrive before the sign-up). Missing fields
are imputed with the neutral values in ``DEFAULTS`` and reported, so a score is always
computable and it is visible when it rests on guesses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np

from worker_mesh.mesh.errors import PermanentError

FEATURES: tuple[str, ...] = (
    "log_tenure_months",
    "active_days_30d",
    "log_logins_30d",
    "support_tickets_30d",
    "failed_payments_90d",
    "nps_centered",
    "nps_missing",
    "plan_free",
    "plan_starter",
    "plan_enterprise",
    "log_seats",
    "log_mrr_per_seat",
)
"""Column order of the feature matrix (``pro`` is the plan baseline)."""

DEFAULTS: dict[str, Any] = {
    "plan": "starter",
    "seats": 1,
    "mrr": 0.0,
    "logins_30d": 10,
    "active_days_30d": 8,
    "support_tickets_30d": 0,
    "failed_payments_90d": 0,
}
"""Neutral values used when a profile lacks a field (imputed fields are reported)."""

_INTS = ("seats", "logins_30d", "active_days_30d", "support_tickets_30d", "failed_payments_90d")
PLANS = ("free", "starter", "pro", "enterprise")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def normalize(raw: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """A typed profile from stored fields, and the names of the imputed ones.

    Raises PermanentError for values that cannot be read (a corrupt profile is not
    going to heal by retrying)."""
    src = {_text(k): v for k, v in raw.items() if not _text(k).startswith("_")}
    out: dict[str, Any] = {}
    imputed: list[str] = []
    try:
        for name in _INTS:
            if src.get(name) in (None, b"", ""):
                out[name] = DEFAULTS[name]
                imputed.append(name)
            else:
                out[name] = int(float(_text(src[name])))
        if src.get("mrr") in (None, b"", ""):
            out["mrr"] = DEFAULTS["mrr"]
            imputed.append("mrr")
        else:
            out["mrr"] = float(_text(src["mrr"]))
        plan = _text(src["plan"]) if src.get("plan") not in (None, b"", "") else None
        if plan is None:
            plan = DEFAULTS["plan"]
            imputed.append("plan")
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}")
        out["plan"] = plan
        nps = src.get("nps")
        out["nps"] = None if nps in (None, b"", "") else int(float(_text(nps)))
        as_of = date.fromisoformat(_text(src["as_of"])) if src.get("as_of") else None
        signup = date.fromisoformat(_text(src["signup_date"])) if src.get("signup_date") else None
    except (ValueError, TypeError) as exc:
        raise PermanentError(f"customer profile is not readable: {exc}") from exc
    if signup is None or as_of is None:
        imputed.append("signup_date")
        out["tenure_days"] = 0
    else:
        out["tenure_days"] = max(0, (as_of - signup).days)
    return out, imputed


def vector_of(p: Mapping[str, Any]) -> list[float]:
    """The feature row of a normalized profile, in ``FEATURES`` order."""
    nps = p["nps"]
    seats = max(1, p["seats"])
    return [
        math.log1p(p["tenure_days"] / 30),
        float(p["active_days_30d"]),
        math.log1p(p["logins_30d"]),
        float(p["support_tickets_30d"]),
        float(p["failed_payments_90d"]),
        float(nps - 7) if nps is not None else 0.0,
        1.0 if nps is None else 0.0,
        1.0 if p["plan"] == "free" else 0.0,
        1.0 if p["plan"] == "starter" else 0.0,
        1.0 if p["plan"] == "enterprise" else 0.0,
        math.log1p(seats),
        math.log1p(p["mrr"] / seats),
    ]


def vector(raw: Mapping[Any, Any]) -> np.ndarray:
    return np.asarray(vector_of(normalize(raw)[0]), dtype=np.float64)


def matrix(raws: Sequence[Mapping[Any, Any]]) -> np.ndarray:
    """Feature matrix (n x len(FEATURES)) of many stored or synthetic profiles."""
    if not raws:
        return np.zeros((0, len(FEATURES)))
    return np.asarray([vector_of(normalize(r)[0]) for r in raws], dtype=np.float64)
