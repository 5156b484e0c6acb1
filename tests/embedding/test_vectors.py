"""The vector store and the re-embedding steps against a real redis-server and the
real model: only changed chunks are embedded, deletes, search, model upgrades."""

from __future__ import annotations

from typing import Any

import numpy as np
import redis

from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.embedding import pipeline
from worker_mesh.workers.embedding.chunking import Chunk
from worker_mesh.workers.embedding.model import SERVICE_NAME, EmbeddingModel, embed_texts
from worker_mesh.workers.embedding.vectors import VectorStore
from worker_mesh.workers.runtime import Runtime

META = {"run_id": "r1", "workflow": "reembed", "workflow_version": "1"}

TOPICS = ["billing and invoices", "password reset and login", "GPU scheduling at night",
          "customer onboarding emails", "search relevance tuning", "data export to CSV",
          "team permissions and roles", "mobile app notifications", "API rate limits",
          "single sign-on with SAML"]


def long_body(edit: int | None = None) -> str:
    paras = []
    for i, topic in enumerate(TOPICS):
        lead = "This section was rewritten last week." if i == edit else "This section explains"
        paras.append(f"{lead} {topic}. " + " ".join(
            f"Detail {j} about {topic} helps administrators plan their work." for j in range(8)))
    return "\n\n".join(paras)


def runtime(settings: MeshSettings, model: EmbeddingModel) -> Runtime:
    rt = Runtime(settings)
    rt.service(SERVICE_NAME, lambda _: model)
    return rt


def doc(cid: str, body: str, version: int = 1, title: str = "Admin guide") -> dict[str, Any]:
    return {"content_id": cid, "title": title, "body": body, "version": version, "event_id": "e1"}


def test_editing_one_paragraph_re_embeds_only_the_affected_chunks(
        settings: MeshSettings, model: EmbeddingModel) -> None:
    rt = runtime(settings, model)
    first = pipeline.embed_plan(rt, pipeline.plan(settings, doc("guide", long_body())), META)
    n = first["chunks"]
    assert n >= 8 and first["embedded"] == n and first["skipped"] == 0

    again = pipeline.embed_plan(rt, pipeline.plan(settings, doc("guide", long_body())), META)
    assert (again["embedded"], again["skipped"]) == (0, n)  # a redelivered run embeds nothing

    edited = pipeline.embed_plan(
        rt, pipeline.plan(settings, doc("guide", long_body(edit=4), version=2)), META)
    assert edited["chunks"] == n
    assert 1 <= edited["embedded"] <= 2, edited
    assert edited["skipped"] == n - edited["embedded"]
    stored = VectorStore(rt.redis, rt.keys).get(model.version, "guide")
    assert stored is not None and stored.content_version == 2
    assert stored.meta["run_id"] == "r1" and stored.meta["event_id"] == "e1"
    assert stored.meta["model_version"] == model.version and stored.meta["workflow_version"] == "1"


def test_an_older_version_never_overwrites_a_newer_one(
        settings: MeshSettings, model: EmbeddingModel) -> None:
    rt = runtime(settings, model)
    pipeline.embed_plan(rt, pipeline.plan(settings, doc("d", "new text", version=3)), META)
    res = pipeline.embed_plan(rt, pipeline.plan(settings, doc("d", "old text", version=2)), META)
    assert res["stale"] is True and res["embedded"] == 0
    stored = VectorStore(rt.redis, rt.keys).get(model.version, "d")
    assert stored is not None and "new text" in stored.texts[-1]


def test_search_finds_the_right_document_and_delete_removes_it(
        settings: MeshSettings, model: EmbeddingModel, r: redis.Redis) -> None:
    rt = runtime(settings, model)
    pipeline.embed_plan(rt, pipeline.plan(settings, doc(
        "cats", "Cats sleep most of the day and love warm windowsills.", title="Cats")), META)
    pipeline.embed_plan(rt, pipeline.plan(settings, doc(
        "tax", "File your quarterly tax return before the deadline to avoid penalties.",
        title="Taxes")), META)
    hits = pipeline.search(r, rt.keys, model, "where does my kitten like to nap?", k=2)
    assert hits[0].content_id == "cats"
    assert hits[0].score > hits[1].score and "windowsills" in hits[0].snippet

    removed = pipeline.delete(rt, "cats", META)["removed"]
    assert removed >= 1
    hits = pipeline.search(r, rt.keys, model, "where does my kitten like to nap?", k=2)
    assert [h.content_id for h in hits] == ["tax"]


def test_a_model_upgrade_re_embeds_everything_and_drops_the_old_version(
        settings: MeshSettings, model: EmbeddingModel) -> None:
    rt = runtime(settings, model)
    store = VectorStore(rt.redis, rt.keys)
    old = "all-MiniLM-L6-v2@000000000000"

    def fake(texts: list[str]) -> np.ndarray:  # the "old model": some other vectors
        return np.ones((len(texts), model.dim), dtype=np.float32) / np.sqrt(model.dim)

    for cid in ("a", "b", "c"):
        store.upsert(old, cid, 1, [Chunk(0, f"Document {cid} first part"),
                                   Chunk(1, f"Document {cid} second part")], fake, META)
    res = pipeline.reembed_all(rt, META | {"workflow": "reembed-all"})
    assert res["from_versions"] == [old]
    assert (res["documents"], res["embedded"]) == (3, 6)
    assert store.models() == [model.version]
    stored = store.get(model.version, "b")
    assert stored is not None
    want = embed_texts(model, ["Document b second part"])[0]
    got = np.frombuffer(stored.vectors[stored.hashes[1]], dtype=np.float32)
    assert np.allclose(got, want, atol=1e-5)
