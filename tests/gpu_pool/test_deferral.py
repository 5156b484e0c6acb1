"""Off-peak deferral against a real redis-server and the real Celery producer: held
outside a window, released inside in batch-sized groups, deadlines released in time,
urgent work never held. Time is injected; nothing sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from worker_mesh.gpu_pool.deferral import CelerySender, Deferral, run_releaser
from worker_mesh.gpu_pool.queues import depths
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # window: 01:00-06:00 UTC
WINDOW_OPEN = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


class CountingSender(CelerySender):
    """The real sender, remembering the size of each group it sent."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.groups: list[tuple[int, bool]] = []

    def send(self, sigs: Sequence[dict[str, Any]], *, deferred: bool) -> None:
        super().send(sigs, deferred=deferred)
        self.groups.append((len(sigs), deferred))


@pytest.fixture
def gsettings(redis_server: EmbeddedRedis, settings: MeshSettings) -> MeshSettings:
    env = settings.to_env() | {"MESH_GPU_OFFPEAK_WINDOWS": '["01:00-06:00 UTC"]',
                               "MESH_GPU_RELEASE_GROUP_SIZE": "4",
                               "MESH_GPU_DEADLINE_LEAD_S": "600"}
    return MeshSettings.load(env)


@pytest.fixture
def setup(gsettings: MeshSettings, r: redis.Redis) -> Iterator[tuple[Deferral, CountingSender, Any]]:
    app = create_app(gsettings)
    sender = CountingSender(app)
    yield Deferral(r, Keys(gsettings.redis.key_prefix), gsettings.gpu, sender), sender, app
    app.close()


def bulk(app: Any, i: int) -> dict[str, Any]:
    return dict(app.signature("mesh.gpu.embed_bulk", args=(f"text {i}",), task_id=f"b-{i}"))


def queued(r: redis.Redis, d: Deferral) -> dict[str, int]:
    return depths(r, d.keys).queued


def test_bulk_work_is_held_outside_window_and_released_inside(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, sender, app = setup
    # Given bulk GPU work submitted at noon (outside 01:00-06:00)
    results = [d.submit(bulk(app, i), now=NOON) for i in range(10)]
    # Then it is held, durably in Redis, and nothing is queued
    assert all(s.held for s in results)
    assert queued(r, d) == {"gpu": 0, "gpu-batch": 0}
    other = redis.Redis(**{k: v for k, v in r.connection_pool.connection_kwargs.items()
                           if k in ("host", "port", "db", "username", "password")})
    assert Deferral(other, d.keys, d.gpu, sender).held_count() == 10  # another process sees it
    # When the releaser ticks before the window: nothing moves
    assert d.release_due(NOON + timedelta(hours=5)) == 0
    # When the window opens: everything goes to gpu-batch, in groups of the batch size
    assert d.release_due(WINDOW_OPEN) == 10
    assert queued(r, d) == {"gpu": 0, "gpu-batch": 10}
    assert [g for g, _ in sender.groups] == [4, 4, 2] and all(dd for _, dd in sender.groups)
    assert d.held_count() == 0 and d.status().released == {"window": 10}
    # And the messages are the original tasks, marked as deferred, in FIFO order
    raw = r.lrange(d.keys.celery_prefix() + "gpu-batch", 0, -1)
    msgs = [json.loads(m) for m in reversed(raw)]  # LPUSH: newest first
    assert [m["headers"]["id"] for m in msgs] == [f"b-{i}" for i in range(10)]
    assert all(m["headers"]["task"] == "mesh.gpu.embed_bulk" for m in msgs)
    assert all(m["headers"]["mesh_deferred"] == 1 for m in msgs)


def test_bulk_work_inside_window_is_sent_at_once(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    s = d.submit(bulk(app, 1), now=WINDOW_OPEN + timedelta(minutes=5))
    assert not s.held and s.reason == "window open"
    assert queued(r, d)["gpu-batch"] == 1


def test_urgent_work_is_never_held(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    for i in range(3):
        s = d.submit(dict(app.signature("mesh.gpu.embed", args=(f"t{i}",))), now=NOON)
        assert not s.held
    assert queued(r, d) == {"gpu": 3, "gpu-batch": 0}
    assert d.held_count() == 0


def test_deadline_before_window_releases_in_time(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    deadline = NOON + timedelta(hours=6)  # 18:00, before the 01:00 window
    s = d.submit(bulk(app, 1), now=NOON, deadline=deadline)
    late = d.submit(bulk(app, 2), now=NOON, deadline=WINDOW_OPEN + timedelta(hours=2))
    assert s.held and "deadline" in s.reason and late.held
    assert d.status().with_deadline == 1  # the window comes first for the other one
    assert d.release_due(deadline - timedelta(seconds=601)) == 0
    assert d.release_due(deadline - timedelta(seconds=600)) == 1
    assert queued(r, d)["gpu-batch"] == 1 and d.held_count() == 1
    assert d.status().released == {"deadline": 1}


def test_deadline_already_too_close_is_sent_now(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    s = d.submit(bulk(app, 1), now=NOON, deadline=NOON + timedelta(minutes=5))
    assert not s.held and queued(r, d)["gpu-batch"] == 1


def test_release_all_for_the_operator(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    for i in range(6):
        d.submit(bulk(app, i), now=NOON)
    assert d.release_all() == 6 and d.held_count() == 0
    assert queued(r, d)["gpu-batch"] == 6


def test_resubmitting_the_same_task_id_holds_it_once(setup) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    d.submit(bulk(app, 7), now=NOON)
    d.submit(bulk(app, 7), now=NOON + timedelta(minutes=1))
    assert d.held_count() == 1


def test_releaser_loop_with_injected_clock(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, _, app = setup
    for i in range(5):
        d.submit(bulk(app, i), now=NOON)
    t = [NOON]
    slept: list[float] = []

    def sleep(s: float) -> None:  # the clock moves an hour per tick; no real waiting
        slept.append(s)
        t[0] += timedelta(hours=1)

    sent = run_releaser(d, clock=lambda: t[0], sleep=sleep, interval_s=3600, max_ticks=16)
    assert sent == 5 and d.held_count() == 0
    assert queued(r, d)["gpu-batch"] == 5
    assert len(slept) == 15 and slept[0] == 3600


def test_deferral_disabled_sends_everything(gsettings: MeshSettings, r: redis.Redis) -> None:
    s = MeshSettings.load(gsettings.to_env() | {"MESH_GPU_DEFERRAL_ENABLED": "false"})
    app = create_app(s)
    d = Deferral(r, Keys(s.redis.key_prefix), s.gpu, CelerySender(app))
    assert not d.submit(bulk(app, 1), now=NOON).held
    assert depths(r, d.keys).queued["gpu-batch"] == 1


def test_canvases_are_held_by_their_bulk_part_and_released_whole(setup, r) -> None:  # type: ignore[no-untyped-def]
    from celery import chain, chord, group

    d, _, app = setup
    ch = chain(app.signature("mesh.gpu.embed_bulk", args=("x",)),
               app.signature("mesh.gpu.release_due"))
    cd = chord(group(app.signature("mesh.gpu.embed_bulk", args=(f"s{i}",)) for i in range(3)),
               app.signature("mesh.gpu.release_due"))
    urgent_chain = chain(app.signature("mesh.gpu.embed", args=("now",)),
                         app.signature("mesh.gpu.release_due"))
    assert d.submit(json.loads(json.dumps(ch)), now=NOON).held
    assert d.submit(json.loads(json.dumps(cd)), now=NOON).held
    assert not d.submit(json.loads(json.dumps(urgent_chain)), now=NOON).held
    assert queued(r, d) == {"gpu": 1, "gpu-batch": 0}
    assert d.release_due(WINDOW_OPEN) == 2
    # the chain's first task and the chord's three header tasks reach gpu-batch
    assert queued(r, d) == {"gpu": 1, "gpu-batch": 4}


def test_for_app_builds_from_the_app_settings(gsettings: MeshSettings) -> None:
    app = create_app(gsettings)
    d = Deferral.for_app(app)
    assert d.group_size == 4 and d.keys.prefix == gsettings.redis.key_prefix
    assert d.submit(bulk(app, 1), now=NOON).held and d.held_count() == 1
