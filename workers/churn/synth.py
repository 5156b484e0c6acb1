"""A seeded synthetic customer generator with a documented churn relation.

Why synthetic: the project ships without customer data, yet the churn model must have
real signal to learn (and tests must be able to assert that it did). Customers are drawn
from plausible distributions around a latent *engagement* level; the churn label is then
drawn from a known logistic relation (``true_logit``), documented in docs/churn.md. The
generator produces *profiles* in exactly the shape the profile store holds, so training
and serving share one feature code path (``workers.churn.features``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

PLANS = ("free", "starter", "pro", "enterprise")
PLAN_SHARE = (0.35, 0.30, 0.25, 0.10)
PRICE_PER_SEAT = {"free": 0.0, "starter": 15.0, "pro": 39.0, "enterprise": 55.0}
SEATS_RANGE = {"free": (1, 3), "starter": (1, 25), "pro": (3, 250), "enterprise": (50, 3000)}
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA")
AS_OF = date(2026, 11, 1)

# The documented relation (docs/churn.md, "The churn relation").
INTERCEPT = 1.35
PLAN_EFFECT = {"free": 0.55, "starter": 0.20, "pro": 0.0, "enterprise": -0.70}
COEF = {
    "log_tenure_months": -0.40,   # log1p(tenure_days / 30)
    "active_days_30d": -0.10,
    "log_logins_30d": -0.30,      # log1p(logins_30d)
    "support_tickets_30d": 0.30,
    "failed_payments_90d": 0.85,
    "nps_centered": -0.20,        # nps - 7, 0 when unknown
    "log_seats": -0.15,           # log1p(seats)
}


def true_logit(p: dict[str, Any]) -> float:
    """The log-odds of churning within 90 days, from a profile (see docs/churn.md)."""
    tenure_days = (date.fromisoformat(p["as_of"]) - date.fromisoformat(p["signup_date"])).days
    nps = p.get("nps")
    return (
        INTERCEPT
        + PLAN_EFFECT[p["plan"]]
        + COEF["log_tenure_months"] * math.log1p(max(tenure_days, 0) / 30)
        + COEF["active_days_30d"] * p["active_days_30d"]
        + COEF["log_logins_30d"] * math.log1p(p["logins_30d"])
        + COEF["support_tickets_30d"] * p["support_tickets_30d"]
        + COEF["failed_payments_90d"] * p["failed_payments_90d"]
        + COEF["nps_centered"] * ((nps - 7) if nps is not None else 0)
        + COEF["log_seats"] * math.log1p(p["seats"])
    )


def churn_probability(p: dict[str, Any]) -> float:
    return 1.0 / (1.0 + math.exp(-true_logit(p)))


@dataclass(frozen=True)
class Dataset:
    """Profiles and their churn labels (1 = churned within 90 days)."""

    profiles: list[dict[str, Any]]
    labels: np.ndarray

    def split(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """(train, holdout): the last ``holdout_fraction`` of the (already random) rows,
        so the same dataset always gives the same held-out set."""
        n_hold = max(1, round(len(self.profiles) * holdout_fraction))
        cut = len(self.profiles) - n_hold
        return (Dataset(self.profiles[:cut], self.labels[:cut]),
                Dataset(self.profiles[cut:], self.labels[cut:]))


def profile(rng: np.random.Generator, customer_id: str, as_of: date = AS_OF,
            engagement: float | None = None) -> dict[str, Any]:
    """One customer profile. ``engagement`` (a standard normal latent) drives usage,
    tickets and NPS together, as in real products; low engagement means risk."""
    e = float(rng.normal()) if engagement is None else engagement
    plan = PLANS[int(rng.choice(len(PLANS), p=PLAN_SHARE))]
    lo, hi = SEATS_RANGE[plan]
    seats = int(min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))))
    discount = float(rng.uniform(0.7, 1.0)) if plan == "enterprise" else 1.0
    mrr = round(PRICE_PER_SEAT[plan] * seats * discount, 2)
    tenure_days = int(min(2500, 1 + rng.exponential(420)))
    logins = int(rng.poisson(math.exp(2.4 + 0.7 * e)))
    active = int(rng.binomial(30, 1 / (1 + math.exp(-(0.2 + 1.3 * e)))))
    tickets = int(rng.poisson(0.5 + 0.9 * max(0.0, -e)))
    failed = 0 if plan == "free" else int(rng.poisson(0.12 + 0.25 * max(0.0, -e)))
    nps: int | None = None
    if rng.random() < 0.7:  # 30% never answered the survey
        nps = int(min(10, max(0, round(7 + 1.6 * e + rng.normal(0, 1.5)))))
    return {
        "customer_id": customer_id,
        "plan": plan,
        "seats": seats,
        "mrr": mrr,
        "signup_date": (as_of - timedelta(days=tenure_days)).isoformat(),
        "country": COUNTRIES[int(rng.integers(len(COUNTRIES)))],
        "nps": nps,
        "logins_30d": logins,
        "active_days_30d": active,
        "support_tickets_30d": tickets,
        "failed_payments_90d": failed,
        "as_of": as_of.isoformat(),
    }


def customers(n: int, seed: int = 0, prefix: str = "c") -> list[dict[str, Any]]:
    """``n`` profiles, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [profile(rng, f"{prefix}{i:06d}") for i in range(n)]


def dataset(n: int, seed: int = 0) -> Dataset:
    """``n`` labelled customers: label ~ Bernoulli(sigmoid(true_logit(profile)))."""
    rng = np.random.default_rng(seed)
    profiles = [profile(rng, f"s{seed}-{i:06d}") for i in range(n)]
    p = np.array([churn_probability(x) for x in profiles])
    labels = (rng.random(n) < p).astype(np.int64)
    return Dataset(profiles, labels)


def with_label_noise(data: Dataset, share: float, seed: int = 0) -> Dataset:
    """A copy with ``share`` of the labels replaced by coin flips (a broken pipeline)."""
    rng = np.random.default_rng(seed + 1)
    labels = data.labels.copy()
    hit = rng.random(len(labels)) < share
    labels[hit] = rng.integers(0, 2, int(hit.sum()))
    return Dataset(data.profiles, labels)


def risky_profile(customer_id: str, as_of: date = AS_OF) -> dict[str, Any]:
    """A customer any sensible model calls high-risk (for demos and tests)."""
    return {
        "customer_id": customer_id, "plan": "free", "seats": 1, "mrr": 0.0,
        "signup_date": (as_of - timedelta(days=20)).isoformat(), "country": "US", "nps": 1,
        "logins_30d": 0, "active_days_30d": 0, "support_tickets_30d": 6,
        "failed_payments_90d": 0, "as_of": as_of.isoformat(),
    }


def loyal_profile(customer_id: str, as_of: date = AS_OF) -> dict[str, Any]:
    """A customer any sensible model calls safe."""
    return {
        "customer_id": customer_id, "plan": "enterprise", "seats": 400, "mrr": 18000.0,
        "signup_date": (as_of - timedelta(days=1400)).isoformat(), "country": "DE", "nps": 10,
        "logins_30d": 180, "active_days_30d": 28, "support_tickets_30d": 0,
        "failed_payments_90d": 0, "as_of": as_of.isoformat(),
    }
