"""The dead-letter stream against a real redis-server, and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support.procs import ROOT, child_env
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.mesh.keys import Keys, partition_of
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


def _fields(cid: str, type_name: str = "customer.activity") -> dict[str, str]:
    return {"id": f"e-{cid}", "type": type_name, "v": "1", "key": f"customer:{cid}",
            "ts": "2026-11-23T10:00:00Z",
            "payload": json.dumps({"customer_id": cid, "logins_30d": 1, "active_days_30d": 1})}


def _cli(settings: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=120)


@pytest.fixture
def dlq(settings: MeshSettings, r: redis.Redis) -> DeadLetters:
    return DeadLetters(r, Keys(settings.redis.key_prefix), settings.streams)


def test_add_and_list_keep_reason_and_original_fields(dlq: DeadLetters) -> None:
    dlq.add("quality_failed", "content kept failing its checks", _fields("1"),
            source="mesh.content.check", error="QualityCheckFailed: too short")
    dlq.add("invalid", "bad", {"garbage": "x"}, source="dispatcher", stream="s", entry_id="1-0",
            deliveries=1)
    first, second = dlq.list()
    assert first.reason_code == "quality_failed" and first.error.startswith("QualityCheckFailed")
    assert first.fields == _fields("1") and first.type == "customer.activity"
    assert second.type == "" and second.deliveries == 1 and second.entry_id == "1-0"
    assert [d.reason_code for d in dlq.list(type_name="customer.activity")] == ["quality_failed"]
    assert len(dlq.list(limit=1)) == 1


def test_replay_by_id_goes_to_the_entity_partition_once(settings: MeshSettings, r: redis.Redis) -> None:
    s = MeshSettings.load({**settings.to_env(), "MESH_STREAMS_PARTITIONS": "4"})
    keys = Keys(s.redis.key_prefix)
    dlq = DeadLetters(r, keys, s.streams)
    dl_id = dlq.add("workflow_failed", "failed", _fields("7"), source="t")
    res = dlq.replay([dl_id, "1-1"])
    assert res.count == 1 and res.missing == ["1-1"]
    stream = keys.stream(partition_of("customer:7", 4))
    [(_, fields)] = r.xrange(stream)
    assert fields[b"replay"].decode() == dl_id and fields[b"id"] == b"e-7"
    assert dlq.count() == 0 and dlq.replayed_total() == 1
    assert dlq.replay([dl_id]).missing == [dl_id]  # a second replay finds nothing


def test_replay_by_type_and_all(dlq: DeadLetters) -> None:
    dlq.add("invalid", "x", _fields("1"), source="t")
    dlq.add("invalid", "x", _fields("2", "content.deleted"), source="t")
    dlq.add("invalid", "x", _fields("3"), source="t")
    assert dlq.replay(type_name="customer.activity").count == 2
    assert [d.type for d in dlq.list()] == ["content.deleted"]
    assert dlq.replay(all_=True).count == 1 and dlq.count() == 0
    with pytest.raises(ValueError, match="exactly one"):
        dlq.replay(["1-1"], all_=True)


def test_cli_list_replay_and_usage(settings: MeshSettings, dlq: DeadLetters) -> None:
    assert "empty" in _cli(settings, "dlq", "list").stdout
    dl_id = dlq.add("unknown_type", "unknown event type 'x.y'", _fields("9", "x.y"), source="t")
    out = _cli(settings, "dlq", "list", "--json", "--type", "x.y")
    assert out.returncode == 0 and json.loads(out.stdout)[0]["id"] == dl_id
    assert "unknown event type" in _cli(settings, "dlq", "list").stdout
    bad = _cli(settings, "dlq", "replay", "--all", "--type", "x.y")
    assert bad.returncode != 0 and "exactly one" in bad.stderr
    assert _cli(settings, "dlq", "replay", "--id", "1-1").returncode == 1
    done = _cli(settings, "dlq", "replay", "--type", "x.y", "--json")
    assert done.returncode == 0 and dl_id in json.loads(done.stdout)["replayed"]


def test_cli_events_schema(tmp_path: Path, settings: MeshSettings) -> None:
    one = _cli(settings, "events", "schema", "--type", "content.requested")
    assert one.returncode == 0
    assert list(json.loads(one.stdout)["events"]) == ["content.requested@1"]
    out = tmp_path / "schema.json"
    assert _cli(settings, "events", "schema", "--out", str(out)).returncode == 0
    assert len(json.loads(out.read_text())["events"]) >= 9
    assert _cli(settings, "events", "schema", "--type", "nope").returncode != 0
