"""Result and profile stores against a real redis-server: idempotent, never backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.stores.profiles import ProfileStore
from worker_mesh.workers.stores.results import ChurnResults

META = {"run_id": "run-1", "workflow": "churn", "workflow_version": "1"}
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def results(settings: MeshSettings, r: redis.Redis) -> ChurnResults:
    return ChurnResults(r, Keys(settings.redis.key_prefix))


def write(store: ChurnResults, score: float, rev: int, seq: int, event: str = "e1") -> str:
    return store.write("c1", score=score, profile_revision=rev, model_version=f"m{seq}",
                       model_seq=seq, meta=META, event_id=event).status


def test_score_carries_its_provenance(settings: MeshSettings, r: redis.Redis) -> None:
    store = results(settings, r)
    assert write(store, 0.42, rev=1, seq=1, event="evt-9") == "written"
    got = store.get("c1")
    assert got is not None
    assert got["score"] == 0.42 and got["model_version"] == "m1" and got["event_id"] == "evt-9"
    assert got["workflow_version"] == "1" and got["run_id"] == "run-1" and float(got["scored_at"]) > 0


def test_redelivery_does_not_write_twice(settings: MeshSettings, r: redis.Redis) -> None:
    store = results(settings, r)
    assert write(store, 0.3, rev=2, seq=1) == "written"
    first = store.get("c1")
    assert write(store, 0.9, rev=2, seq=1) == "duplicate"   # same version, redelivered
    assert store.get("c1") == first


def test_older_versions_never_overwrite_newer(settings: MeshSettings, r: redis.Redis) -> None:
    store = results(settings, r)
    assert write(store, 0.5, rev=5, seq=2) == "written"
    assert write(store, 0.1, rev=4, seq=9) == "stale"   # older profile, even with a newer model
    assert write(store, 0.1, rev=5, seq=1) == "stale"   # same profile, older promotion
    assert store.get("c1")["score"] == 0.5  # type: ignore[index]
    out = store.write("c1", score=0.8, profile_revision=5, model_version="m3", model_seq=3,
                      meta=META, event_id="e2")
    assert out.status == "written" and out.prev_score == 0.5   # a rescore after a promotion


def test_batch_writes_follow_the_same_rules(settings: MeshSettings, r: redis.Redis) -> None:
    store = results(settings, r)
    write(store, 0.5, rev=3, seq=1)
    rows = [{"customer_id": "c1", "score": 0.7, "profile_revision": 2, "model_version": "m2",
             "model_seq": 2},
            {"customer_id": "c2", "score": 0.2, "profile_revision": 1, "model_version": "m2",
             "model_seq": 2}]
    assert [o.status for o in store.write_many(rows, META, "e3")] == ["stale", "written"]
    assert [o.status for o in store.write_many(rows, META, "e3")] == ["stale", "duplicate"]


def test_profile_merge_is_idempotent_and_ordered(settings: MeshSettings, r: redis.Redis) -> None:
    profiles = ProfileStore(r, Keys(settings.redis.key_prefix))
    created = {"customer_id": "c1", "plan": "pro", "seats": 10, "mrr": 390.0,
               "signup_date": "2025-01-01", "country": "DE"}
    rev, changed = profiles.merge("c1", "customer.created", created, T0, "e-created")
    assert (rev, changed) == (1, True)
    assert profiles.merge("c1", "customer.created", created, T0, "e-created") == (1, False)

    # Update v3 arrives before update v2 (out of order): v2 must not undo v3's plan.
    v3 = {"customer_id": "c1", "plan": "enterprise", "version": 3}
    v2 = {"customer_id": "c1", "plan": "starter", "nps": 4, "version": 2}
    assert profiles.merge("c1", "customer.updated", v3, T0 + timedelta(minutes=2), "e-v3")[0] == 2
    assert profiles.merge("c1", "customer.updated", v2, T0 + timedelta(minutes=1), "e-v2")[0] == 3
    p = profiles.get("c1")
    assert p["plan"] == "enterprise" and p["nps"] == "4" and p["seats"] == "10"

    # An older activity snapshot does not replace a newer one.
    new = {"customer_id": "c1", "logins_30d": 40, "active_days_30d": 20}
    old = {"customer_id": "c1", "logins_30d": 1, "active_days_30d": 1}
    profiles.merge("c1", "customer.activity", new, T0 + timedelta(hours=2), "e-act2")
    rev, changed = profiles.merge("c1", "customer.activity", old, T0 + timedelta(hours=1), "e-act1")
    assert not changed and profiles.get("c1")["logins_30d"] == "40"
    assert profiles.get("c1")["as_of"] == "2026-11-01" and rev == 4


def test_shards_cover_every_customer_once(settings: MeshSettings, r: redis.Redis) -> None:
    profiles = ProfileStore(r, Keys(settings.redis.key_prefix))
    ids = [f"c{i:03d}" for i in range(23)]
    for cid in ids:
        profiles.put({"customer_id": cid, "plan": "pro"})
    bounds = profiles.shard_bounds(5)
    assert len(bounds) == 5 and bounds[-1][1] is None
    covered = [cid for lo, hi in bounds for cid in profiles.ids_between(lo, hi)]
    assert covered == ids
