"""Runs made of bulk GPU work wait for the off-peak window; other runs never wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from worker_mesh.chains.registry import WorkflowRegistry
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ModelRetrainRequested
from worker_mesh.gpu_pool.deferral import Deferral
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


def _window(offset_h: int) -> str:
    start = datetime.now(UTC) + timedelta(hours=offset_h)
    end = start + timedelta(hours=1)
    return f'["{start:%H:%M}-{end:%H:%M} UTC"]'


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.workflow("bulk", on=["model.retrain_requested"])(
        lambda env, ctx: ctx.sig("mesh.gpu.embed_bulk", {"text": "x"}))
    reg.workflow("urgent", on=["model.retrain_requested"])(
        lambda env, ctx: ctx.sig("mesh.gpu.embed", {"text": "x"}))
    return reg


def _depths(r: redis.Redis, s: MeshSettings) -> dict[str, int]:
    cp = Keys(s.redis.key_prefix).celery_prefix()
    return {q: int(r.llen(cp + q)) for q in ("gpu", "gpu-batch")}


@pytest.mark.integration
@pytest.mark.parametrize(("offset_h", "held"), [(3, 1), (0, 0)])
def test_bulk_run_is_held_outside_the_window_and_sent_inside(
        settings: MeshSettings, r: redis.Redis, offset_h: int, held: int) -> None:
    s = MeshSettings.load({**settings.to_env(), "MESH_GPU_OFFPEAK_WINDOWS": _window(offset_h)})
    app = create_app(s)
    reg = _registry()
    starter = CeleryStarter(app, reg)
    env = Envelope.wrap(ModelRetrainRequested(reason="test"))
    errs = starter.start_many([StartRequest(w, env, reg.get(w).run_id(env)) for w in ("bulk", "urgent")])
    assert errs == [None, None]
    deferral = Deferral.for_app(app, r)
    assert deferral.held_count() == held
    assert _depths(r, s) == {"gpu": 1, "gpu-batch": 1 - held}
    if held:
        assert deferral.release_all() == 1
        assert _depths(r, s) == {"gpu": 1, "gpu-batch": 1}
