"""The re-embedding steps as plain typed functions (the tasks in
``workers/tasks/embedding.py`` are thin wrappers; tests call these directly).

``plan`` (CPU) chunks a document and validates its size; ``embed_plan`` (GPU) embeds the
chunks whose text changed and upserts; ``delete`` removes a document; ``reembed_all``
(GPU bulk) moves every document to the current model version after a model upgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from worker_mesh.mesh.errors import PermanentError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import metrics
from worker_mesh.workers.embedding import model as model_mod
from worker_mesh.workers.embedding.chunking import Chunk, chunk_text, document_text, text_hash
from worker_mesh.workers.embedding.vectors import Hit, VectorStore


def plan(settings: MeshSettings, doc: dict[str, Any]) -> dict[str, Any]:
    """Chunk ``doc`` ({content_id, title, body, version}) into a JSON plan."""
    wf = settings.workflows
    cid = str(doc["content_id"])
    chunks = chunk_text(
        document_text(str(doc.get("title", "")), str(doc.get("body", ""))),
        chunk_chars=wf.embed_chunk_chars, overlap_chars=wf.embed_chunk_overlap_chars,
        max_chars=wf.max_content_chars, what=f"content {cid}",
    )
    return {
        "content_id": cid,
        "title": str(doc.get("title", "")),
        "version": int(doc.get("version", 1)),
        "event_id": str(doc.get("event_id", "")),
        "chunks": [{"index": c.index, "text": c.text, "hash": c.hash} for c in chunks],
    }


def chunks_of(plan_: dict[str, Any]) -> list[Chunk]:
    out = []
    for c in plan_["chunks"]:
        chunk = Chunk(int(c["index"]), str(c["text"]))
        if c.get("hash") and c["hash"] != text_hash(chunk.text):
            raise PermanentError(f"chunk {chunk.index} of {plan_['content_id']} is corrupt")
        out.append(chunk)
    return out


def embedder_for(rt: Any) -> tuple[str, Callable[[list[str]], np.ndarray]]:
    """(model version, texts -> vectors) of the process's model, through the GPU pool's
    micro-batcher (``workers.tasks.gpu.embed_many``): the chunks of concurrent
    documents share forward passes, and every pass is counted (batch size, wait,
    GPU-seconds) like any GPU work."""
    from worker_mesh.workers.tasks.gpu import embed_many

    m = model_mod.get_model(rt)
    return m.version, lambda texts: embed_many(rt, texts)


def embed_plan(rt: Any, plan_: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Embed the changed chunks of a planned document and upsert them."""
    version, embed = embedder_for(rt)
    store = VectorStore(rt.redis, rt.keys)
    res = store.upsert(version, plan_["content_id"], int(plan_["version"]), chunks_of(plan_),
                       embed, meta | {"event_id": plan_.get("event_id", "")},
                       title=plan_.get("title", ""))
    if not res.stale:
        metrics.result_updated("embedding", res.content_id)
    return res.as_dict() | {"event_id": plan_.get("event_id", ""), **_meta(meta),
                            "wrote": f"embedding:{res.content_id}"}


def delete(rt: Any, content_id: str, meta: dict[str, Any], event_id: str = "") -> dict[str, Any]:
    removed = VectorStore(rt.redis, rt.keys).delete(content_id)
    metrics.result_removed("embedding", content_id)
    return {"content_id": content_id, "removed": removed, "event_id": event_id, **_meta(meta),
            "wrote": f"embedding:{content_id} (deleted)"}


def reembed_all(rt: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Re-embed every document stored under an older model version with the current
    one, then drop the old versions. Safe to re-run: finished documents are skipped
    by hash, and an old version is dropped only after all its documents moved."""
    version, embed = embedder_for(rt)
    store = VectorStore(rt.redis, rt.keys)
    docs = embedded = skipped = 0
    old_models = [m for m in store.models() if m != version]
    for old in old_models:
        for cid in store.content_ids(old):
            doc = store.get(old, cid)
            if doc is None:
                continue
            chunks = [Chunk(i, t) for i, t in enumerate(doc.texts)]
            res = store.upsert(version, cid, doc.content_version, chunks, embed,
                               meta | {"event_id": doc.meta.get("event_id", "")},
                               title=doc.meta.get("title", ""))
            docs += 1
            embedded += res.embedded
            skipped += res.skipped
        store.drop_model(old)
    return {"model_version": version, "from_versions": old_models, "documents": docs,
            "embedded": embedded, "skipped": skipped, **_meta(meta),
            "wrote": f"embedding:* x{docs}"}


def search(client: Any, keys: Any, model: model_mod.EmbeddingModel, text: str,
           k: int = 5) -> list[Hit]:
    """Nearest chunks to ``text`` among the documents embedded with ``model``."""
    query = model_mod.embed_texts(model, [text])[0]
    return VectorStore(client, keys).search(query, model.version, k)


def _meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("run_id", "workflow", "workflow_version")}
