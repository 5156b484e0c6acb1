"""`mesh audit` against a real redis-server: consistent, in flight, and mismatch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from tests.support.procs import ROOT, child_env
from worker_mesh.events.audit import audit
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


def _audit_cli(settings: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "audit", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=120)


def test_unread_entries_are_in_flight_and_a_lost_count_is_a_mismatch(settings: MeshSettings,
                                                                      r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    Publisher(r, settings.streams, keys).publish_many(
        [CustomerActivity(customer_id=str(i), logins_30d=1, active_days_30d=1) for i in range(5)])
    # No consumer group yet: everything is in flight, nothing is wrong.
    [a] = audit(r, settings)
    assert (a.published, a.accounted, a.in_flight, a.consistent, a.settled) == (5, 0, 5, True, False)
    assert _audit_cli(settings).returncode == 0
    # Waiting for entries nobody processes fails.
    assert _audit_cli(settings, "--wait-s", "0.5").returncode == 1
    # Given the group read 3 and accounted for 2 of them (one entry lost its outcome)
    r.xgroup_create(keys.stream(0), settings.dispatcher.group, id="0")
    rows = r.xreadgroup(settings.dispatcher.group, "c", {keys.stream(0): ">"}, count=3)
    ids = [eid for eid, _ in rows[0][1]]
    r.xack(keys.stream(0), settings.dispatcher.group, *ids)
    r.hincrby(keys.outcomes(0), "started", 2)
    r.hincrby(keys.outcomes(0), "customer.activity|started", 2)
    [a] = audit(r, settings)
    assert (a.pending, a.lag, a.accounted) == (0, 2, 2) and not a.consistent
    res = _audit_cli(settings, "--json")
    assert res.returncode == 1
    [row] = json.loads(res.stdout)["streams"]
    assert row["consistent"] is False and row["by_type"] == {"customer.activity": {"started": 2}}
