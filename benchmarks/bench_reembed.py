"""Re-embedding: chunks/s through the mesh vs ``model.encode`` on the same chunks, and
the share of work skipped when an edit touches one paragraph of a long document.

- mesh: one ``reembed`` workflow run per document (the canvas the dispatcher starts:
  ``mesh.embedding.plan`` on ``cpu`` -> ``mesh.embedding.embed`` on ``gpu``) through a
  real worker process (``--pool``: the GPU worker's threads pool by default; its
  micro-batcher runs one encode at a time, like the baseline), until every vector is
  in Redis;
- direct: ``model.encode(texts, batch_size=64, normalize_embeddings=True)`` in this
  process on exactly the chunk texts the mesh embedded (no chunking, no Redis);
- skip: a long document is embedded, then one paragraph is edited (version 2): the
  share of its chunks the second run did not embed.

Mesh and direct are measured alternately, ``--repeats`` times each (the machine is
shared: medians, and the ratio within the same run). Each mesh repeat uses new
content ids, so nothing is skipped there.

Run: ``.venv/bin/python -m benchmarks.bench_reembed [--docs 24 --paragraphs 10]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import bench_settings, embedded_redis, emit, goal
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentCreated, ContentUpdated
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.embedding import pipeline
from worker_mesh.workers.embedding.model import load_model
from worker_mesh.workers.embedding.vectors import VectorStore
from worker_mesh.workers.procs import start, wait_for

WORDS = ["customer", "churn", "risk", "score", "model", "embedding", "vector", "search",
         "content", "article", "generation", "pipeline", "worker", "queue", "redis", "stream",
         "event", "batch", "window", "retention", "subscription", "invoice", "renewal",
         "support", "ticket", "product", "feature", "usage", "signal", "team", "billing",
         "export", "report", "dashboard", "alert", "schedule", "night", "cost", "account"]


def paragraph(rng: random.Random, i: int) -> str:
    sentences = []
    for _ in range(rng.randint(5, 8)):
        n = rng.randint(8, 16)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
    return f"Section {i}. " + " ".join(sentences)


def document(seed: int, paragraphs: int) -> str:
    rng = random.Random(seed)
    return "\n\n".join(paragraph(rng, i) for i in range(paragraphs))


class Mesh:
    """A worker process plus the starter that hands it reembed runs."""

    def __init__(self, settings: MeshSettings, log_dir: Path, pool: list[str]) -> None:
        self.settings = settings
        # The GPU worker's own configuration by default (threads pool): concurrent
        # documents' chunks meet in the process's micro-batcher, which runs ONE encode
        # at a time - the same torch threads as the direct baseline, so the threads
        # do not flatter the mesh; they overlap the Redis work with the encode.
        self.worker = start("worker", ["worker", "-Q", "cpu,gpu", *pool], settings, log_dir)
        self.app = create_app(settings)
        self.registry = load_workflows(settings)
        self.starter = CeleryStarter(self.app, self.registry, fire_and_forget=False)
        self.keys = Keys(settings.redis.key_prefix)
        self.client = make_client(settings.redis)
        self.store = VectorStore(self.client, self.keys)

    def run(self, event: ContentCreated | ContentUpdated) -> str:
        env = Envelope.wrap(event)
        run_id = self.starter.run_id("reembed", env)
        self.starter.start(StartRequest("reembed", env, run_id))
        return run_id

    def result(self, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        res: dict[str, Any] = self.app.AsyncResult(f"{run_id}:embed").get(timeout=timeout_s)
        return res

    def stop(self) -> None:
        self.worker.stop()


def mesh_rate(mesh: Mesh, docs: list[tuple[str, str]], tag: str, model_version: str) -> tuple[float, int]:
    """(chunks/s, chunks) for embedding ``docs`` through the mesh, start to last vector."""
    t0 = time.perf_counter()
    for cid, body in docs:
        mesh.run(ContentCreated(content_id=f"{cid}-{tag}", title=f"Doc {cid}", body=body))
    ids = {f"{cid}-{tag}" for cid, _ in docs}
    wait_for(lambda: ids <= set(mesh.store.content_ids(model_version)), timeout_s=900,
             interval_s=0.02, what="every document embedded")
    elapsed = time.perf_counter() - t0
    chunks = sum(int(mesh.store.get(model_version, i).meta["chunks"]) for i in ids)  # type: ignore[union-attr,misc]
    return chunks / elapsed, chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--paragraphs", type=int, default=10)
    ap.add_argument("--long-paragraphs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pool", default="threads -c 16",
                    help="mesh worker pool options (the GPU worker's: threads; 'solo' = one "
                         "task at a time, each document's chunks one encode)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 documents, 1 repeat")
    ap.add_argument("--no-write", action="store_true", help="only print the JSON")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.repeats = 8, 1
    pool = ["--pool", *args.pool.split()] if not args.pool.startswith("-") else args.pool.split()

    docs = [(f"d{i:03d}", document(i, args.paragraphs)) for i in range(args.docs)]
    model = load_model()
    with embedded_redis() as server, tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(server)
        texts = [c["text"] for _, body in docs for c in pipeline.plan(
            settings, {"content_id": "x", "title": "Doc x", "body": body})["chunks"]]
        mesh = Mesh(settings, Path(tmp) / "logs", pool)
        try:
            # Warm-up (excluded): the worker loads its model on its first document.
            mesh.result(mesh.run(ContentCreated(content_id="warm", title="w", body=docs[0][1])))
            model.encoder.encode(texts[:64], batch_size=64, show_progress_bar=False)

            mesh_rates, direct_rates = [], []
            chunks = 0
            for rep in range(args.repeats):
                r, chunks = mesh_rate(mesh, docs, f"r{rep}", model.version)
                mesh_rates.append(r)
                t0 = time.perf_counter()
                model.encoder.encode(texts, batch_size=64, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
                direct_rates.append(len(texts) / (time.perf_counter() - t0))

            # The skip share of a one-paragraph edit of a long document.
            long_body = document(10_000, args.long_paragraphs)
            t0 = time.perf_counter()
            full = mesh.result(mesh.run(ContentCreated(content_id="long", title="Long doc",
                                                       body=long_body)))
            full_s = time.perf_counter() - t0
            paras = long_body.split("\n\n")
            mid = len(paras) // 2
            paras[mid] = paras[mid].replace("Section", "Section (revised)", 1) + " One new sentence."
            t0 = time.perf_counter()
            edit = mesh.result(mesh.run(ContentUpdated(content_id="long", title="Long doc",
                                                       body="\n\n".join(paras), version=2)))
            edit_s = time.perf_counter() - t0
        finally:
            mesh.stop()

    mesh_med, direct_med = statistics.median(mesh_rates), statistics.median(direct_rates)
    ratio = mesh_med / direct_med
    skipped_share = edit["skipped"] / edit["chunks"]
    emit("reembed", {
        "device": model.device,
        "model_version": model.version,
        "documents": args.docs,
        "chunks_per_run": chunks,
        "chunk_chars": settings.workflows.embed_chunk_chars,
        "repeats": args.repeats,
        "worker_pool": " ".join(pool),
        "mesh_chunks_per_s": {"median": round(mesh_med, 1),
                              "samples": [round(x, 1) for x in mesh_rates]},
        "direct_encode_chunks_per_s": {"median": round(direct_med, 1),
                                       "samples": [round(x, 1) for x in direct_rates]},
        "mesh_vs_direct": round(ratio, 3),
        "edit_one_paragraph": {
            "paragraphs": args.long_paragraphs,
            "chunks": edit["chunks"],
            "embedded_first_run": full["embedded"],
            "embedded_after_edit": edit["embedded"],
            "skipped_after_edit": edit["skipped"],
            "skipped_share": round(skipped_share, 3),
            "first_run_s": round(full_s, 3),
            "edit_run_s": round(edit_s, 3),
        },
        "goals": {
            "mesh_vs_direct_ge_0_9": goal(ratio, 0.9),
            "skipped_share_ge_0_9": goal(skipped_share, 0.9),
        },
        "notes": "mesh = reembed canvas (plan on cpu, embed on gpu queue) through one real "
                 "worker (worker_pool) incl. chunking, the GPU micro-batcher, Redis reads/writes and result "
                 "backend; direct = encode only. Shared 2-core machine: compare the ratio, "
                 "not the absolute numbers.",
    }, write=not args.no_write)


if __name__ == "__main__":
    main()
