"""Hostile input at a running dispatcher process.

Given a real dispatcher on a real Redis, when hypothesis-generated entries (see
``hostile.py``) are appended raw to the event stream, together with entries that repeat
a field name (possible with ``XADD``, impossible with a dict), then:

- the dispatcher stays up;
- every entry is accounted for (``published == accounted``, nothing pending);
- every entry ``events.wire.decode`` rejects is in the dead-letter stream with a reason;
  every entry it accepts is processed (a valid one is dead-lettered only if its workflow
  could not be built, and then with a reason too);
- the dispatcher's memory stays bounded across rounds.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.hostile import GOOD, hostile_entries
from tests.support.procs import Proc, start, wait_for
from worker_mesh.events.audit import audit
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.wire import decode
from worker_mesh.mesh.errors import InvalidEvent
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.e2e

DUPLICATE_FIELDS = [
    ["id", "a", "type", "customer.activity", "id", "b", "v", "1", "ts", "2026-01-01T00:00:00Z",
     "payload", '{"customer_id":"9","logins_30d":1,"active_days_30d":1}'],
    ["payload", "{}", "payload", "[]", "id", "c", "type", "x", "v", "1", "ts", "t"],
]


class Target:
    def __init__(self, s: MeshSettings, d: Proc) -> None:
        self.s, self.d = s, d
        self.keys = Keys(s.redis.key_prefix)
        self.r = make_client(s.redis)
        self.dlq = DeadLetters(self.r, self.keys, s.streams)
        self.rss: list[int] = []


@pytest.fixture(scope="module")
def target(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hostile")
    s = MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": "hostile",
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
        "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]',
    })
    d = start("dispatcher", ["dispatcher"], s, tmp / "logs")
    t = Target(s, d)
    yield t
    assert d.stop() == 0, d.output()[-3000:]


def _settled(t: Target, published: int) -> bool:
    [row] = audit(t.r, t.s)
    return row.published == published and row.settled


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_entries, min_size=20, max_size=60))
def test_dispatcher_dead_letters_or_processes_every_hostile_entry(
        target: Target, entries: list[dict[bytes, bytes]]) -> None:
    t = target
    stream = t.keys.stream(0)
    before = audit(t.r, t.s)[0].published if t.r.exists(stream) else 0
    sent: dict[str, dict[bytes, bytes] | None] = {}
    for e in entries:
        if e:  # XADD needs at least one field
            sent[t.r.xadd(stream, e).decode()] = e  # type: ignore[arg-type]
    for raw in DUPLICATE_FIELDS:
        sent[t.r.execute_command("XADD", stream, "*", *raw).decode()] = None
    sent[t.r.xadd(stream, GOOD).decode()] = GOOD  # type: ignore[arg-type]
    wait_for(lambda: _settled(t, before + len(sent)), 90,
             what="every hostile entry accounted for")
    assert t.d.alive(), t.d.output()[-3000:]
    dead = {dl.entry_id: dl for dl in t.dlq.list(limit=100_000)}
    for entry_id, e in sent.items():
        if e is None:
            continue
        try:
            decode(e, t.s.streams.max_payload_bytes)
        except InvalidEvent:
            dl = dead.get(entry_id)
            assert dl is not None, f"rejected entry {entry_id} is not in the DLQ"
            assert dl.reason and dl.reason_code in ("invalid", "unknown_type", "too_large"), dl
        else:
            if entry_id in dead:  # processed, but its workflow could not start: say why
                assert dead[entry_id].reason, dead[entry_id]
    t.rss.append(psutil.Process(t.d.popen.pid).memory_info().rss)


def test_dispatcher_memory_stayed_bounded(target: Target) -> None:
    """Runs after the property test (same module): RSS of the dispatcher across its
    rounds of hostile entries (up to ~60 x 300 KB each) grew by less than 64 MiB."""
    t = target
    assert len(t.rss) >= 2, t.rss
    assert max(t.rss) - t.rss[0] < 64 * 1024 * 1024, t.rss
    # and it still works for good events.
    t.r.xadd(t.keys.stream(0), GOOD)  # type: ignore[arg-type]
    wait_for(lambda: audit(t.r, t.s)[0].settled, 60, what="a good entry after the storm")
    assert t.d.alive()


