"""The churn steps as plain functions of a runtime (``workers.runtime.Runtime``):
merge an event into the profile, score the profile with the promoted model, store the
score, alert on a crossing of the high-risk threshold; and the batch form of the same
for the rescoring of all customers. Tasks (``workers.tasks.churn``) only wrap these.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ChurnHighRisk
from worker_mesh.mesh.errors import InvalidEvent, PermanentError
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.workers.churn import features as F
from worker_mesh.workers.churn.registry import ModelRegistry
from worker_mesh.workers.churn.serving import PromotedModel
from worker_mesh.workers.stores.artifacts import make_store
from worker_mesh.workers.stores.profiles import ProfileStore
from worker_mesh.workers.stores.results import ChurnResults, WriteOutcome

ALERT_NAMESPACE = uuid.UUID("0b8f7a4e-2f7c-4f61-a7d6-6c1b1c0e9a31")


@dataclass
class ChurnServices:
    """What the churn steps need, built once per process (``rt.service``)."""

    profiles: ProfileStore
    results: ChurnResults
    registry: ModelRegistry
    model: PromotedModel


def services(rt: Any) -> ChurnServices:
    def build(rt: Any) -> ChurnServices:
        registry = ModelRegistry(rt.redis, rt.keys, make_store(rt.settings.artifacts))
        return ChurnServices(ProfileStore(rt.redis, rt.keys), ChurnResults(rt.redis, rt.keys),
                             registry, PromotedModel(registry))

    return rt.service("churn", build)  # type: ignore[no-any-return]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- the per-customer steps ---------------------------------------------------------------
def merge(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Merge one customer event into the profile (idempotent)."""
    payload = event.get("payload") or {}
    cid = payload.get("customer_id")
    if not cid:
        raise InvalidEvent("customer event without customer_id", field="customer_id")
    rev, changed = services(rt).profiles.merge(
        cid, event["type"], payload, datetime.fromisoformat(event["occurred_at"]), event["event_id"])
    return {"customer_id": cid, "profile_revision": rev, "changed": changed,
            "event_id": event["event_id"]}


def score(rt: Any, merged: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Score the stored profile with the promoted model."""
    out = score_many(rt, [(merged, meta)])[0]
    if isinstance(out, BaseException):
        raise out
    return out


def score_many(rt: Any, items: list[tuple[dict[str, Any], dict[str, Any]]]
               ) -> list[dict[str, Any] | BaseException]:
    """Score many customers at once: the promoted pointer and every profile in one
    round trip, one ``predict`` on the feature matrix. A profile that cannot be read
    fails its own item (a ``PermanentError`` in its place), not the batch."""
    svc = services(rt)
    with translate_errors("churn score"):
        pipe = rt.redis.pipeline(transaction=False)
        pipe.hgetall(svc.registry.promoted_key)
        for merged, _ in items:
            pipe.hgetall(svc.profiles.key(merged["customer_id"]))
        raw_ptr, *raw_profiles = pipe.execute()
    ptr, model = svc.model.get(ModelRegistry.parse_pointer(raw_ptr))
    out: list[dict[str, Any] | BaseException | None] = [None] * len(items)
    rows: list[np.ndarray] = []
    ready: list[int] = []
    for i, ((merged, _), raw_profile) in enumerate(zip(items, raw_profiles, strict=True)):
        raw = {_s(k): _s(v) for k, v in raw_profile.items()}
        try:
            normalized, imputed = F.normalize(raw)
            rows.append(np.asarray(F.vector_of(normalized), dtype=np.float64))
        except PermanentError as exc:
            out[i] = exc
            continue
        ready.append(i)
        out[i] = {**merged, "profile_revision": int(raw.get("_rev", merged["profile_revision"])),
                  "model_version": ptr.version, "model_seq": ptr.seq,
                  "plan": raw.get("plan") if normalized["plan"] == raw.get("plan") else None,
                  "imputed": imputed}
    if rows:
        for i, p in zip(ready, model.predict(np.vstack(rows)), strict=True):
            row = out[i]
            assert isinstance(row, dict)
            row["score"] = float(p)
    return [o for o in out if o is not None]


def store(rt: Any, scored: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Store the score (idempotently) and publish ``churn.high_risk`` on a crossing."""
    svc = services(rt)
    out = svc.results.write(
        scored["customer_id"], score=scored["score"], profile_revision=scored["profile_revision"],
        model_version=scored["model_version"], model_seq=scored["model_seq"], meta=meta,
        event_id=scored["event_id"], extra={"imputed": scored.get("imputed", [])})
    alerted = alert_if_crossed(rt, svc, scored, out, meta)
    return {"customer_id": scored["customer_id"], "score": scored["score"], "status": out.status,
            "model_version": scored["model_version"], "high_risk_published": alerted,
            "wrote": f"churn:{scored['customer_id']}"}


def alert_if_crossed(rt: Any, svc: ChurnServices, row: dict[str, Any], out: WriteOutcome,
                     meta: dict[str, Any]) -> str | None:
    """Publish ``churn.high_risk`` when this version's score crossed the threshold
    (below or no score before, at or above now). The event id and idempotency key are
    derived from (customer, profile revision, promotion), so a retried publish is one
    event for the dispatcher. Returns the alert key when published."""
    threshold = rt.settings.workflows.churn_high_risk_threshold
    if out.status == "stale" or row["score"] < threshold:
        return None
    if out.prev_score is not None and out.prev_score >= threshold:
        return None  # already high risk: alerted when it crossed
    key = f"churn.high_risk:{row['customer_id']}:{row['profile_revision']}:{row['model_seq']}"
    if out.alerted == key:
        return None  # a redelivery after the alert went out
    event = ChurnHighRisk(customer_id=row["customer_id"], score=round(float(row["score"]), 6),
                          model_version=row["model_version"], plan=row.get("plan"))
    rt.publisher.publish(Envelope.wrap(event, idempotency_key=key, producer="churn",
                                       event_id=uuid.uuid5(ALERT_NAMESPACE, key).hex))
    svc.results.mark_alerted(row["customer_id"], row["profile_revision"], row["model_seq"], key)
    return key


# -- batch rescoring ----------------------------------------------------------------------
def rescore_range(rt: Any, meta: dict[str, Any], lo: str, hi: str | None, event_id: str,
                  batch: int = 500) -> dict[str, Any]:
    """Rescore every customer with an id in [lo, hi) with the promoted model."""
    svc = services(rt)
    ptr, model = svc.model.get()
    ids = svc.profiles.ids_between(lo, hi)
    counts = {"customers": 0, "written": 0, "duplicate": 0, "stale": 0, "high_risk_published": 0,
              "unreadable": 0}
    for start in range(0, len(ids), batch):
        part = ids[start:start + batch]
        raws = svc.profiles.get_many(part)
        present, rows_x = [], []
        for cid, raw in zip(part, raws, strict=True):
            if not raw:
                continue
            try:  # one corrupt profile must not fail its whole shard: count it, go on
                rows_x.append(F.vector(raw))
            except PermanentError:
                counts["unreadable"] += 1
                continue
            present.append((cid, raw))
        if not present:
            continue
        scores = model.predict(np.vstack(rows_x))
        rows = [{"customer_id": cid, "score": float(s), "profile_revision": int(raw.get("_rev", 0)),
                 "model_version": ptr.version, "model_seq": ptr.seq, "plan": raw.get("plan")}
                for (cid, raw), s in zip(present, scores, strict=True)]
        for row, out in zip(rows, svc.results.write_many(rows, meta, event_id), strict=True):
            counts["customers"] += 1
            counts[out.status] += 1
            if alert_if_crossed(rt, svc, row, out, meta):
                counts["high_risk_published"] += 1
    return {"lo": lo, "hi": hi, "model_version": ptr.version, "model_seq": ptr.seq, **counts,
            "wrote": f"churn:[{lo}..{hi or ''}) x{counts['written']}"}
