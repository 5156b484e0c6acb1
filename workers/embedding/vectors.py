"""The vector store: chunk vectors in Redis, per (content id, chunk index, model version).

Layout (all under the mesh prefix, built with ``Keys.ns``)::

    <p>:vec:models                      set of model versions that have vectors
    <p>:vec:<model>:ids                 set of content ids embedded with that model
    <p>:vec:<model>:doc:<content id>    hash: meta fields + per chunk i
                                        c:<i>:h (text hash) c:<i>:t (text) c:<i>:v (float32)

One hash per document makes an upsert one atomic ``MULTI`` (WATCHed, so two runs on the
same document never interleave) and a delete one ``DEL``. Search is brute-force cosine
over every stored vector of the current model with numpy: RediSearch is not available,
and at the sizes a single Redis holds comfortably (1e5 chunks = 150 MB of float32) a
matrix product is milliseconds.

Skipping: a chunk whose text hash is already stored for this model version (at any
index: inserting a paragraph shifts indices but not texts) reuses the stored vector;
only the others are embedded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from worker_mesh.mesh.errors import TransientError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.workers.embedding.chunking import Chunk

Embedder = Callable[[list[str]], np.ndarray]
META_FIELDS = ("content_version", "chunks", "model_version", "event_id", "run_id",
               "workflow", "workflow_version", "updated_at", "title")


@dataclass(frozen=True)
class UpsertResult:
    content_id: str
    model_version: str
    content_version: int
    chunks: int
    embedded: int
    skipped: int
    removed: int
    stale: bool = False
    """True when a newer version was already stored: nothing was written."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    content_id: str
    chunk: int
    score: float
    snippet: str
    title: str
    content_version: int
    model_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredDoc:
    content_version: int
    hashes: list[str]
    texts: list[str]
    vectors: dict[str, bytes]
    """text hash -> float32 bytes"""
    meta: dict[str, str]


def _s(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8") if isinstance(v, bytes) else v


def parse_doc(raw: dict[bytes, bytes]) -> StoredDoc | None:
    if not raw:
        return None
    meta = {k: _s(raw.get(k.encode())) for k in META_FIELDS}
    n = int(meta["chunks"] or 0)
    hashes = [_s(raw.get(f"c:{i}:h".encode())) for i in range(n)]
    texts = [_s(raw.get(f"c:{i}:t".encode())) for i in range(n)]
    vectors = {h: raw[f"c:{i}:v".encode()] for i, h in enumerate(hashes)
               if f"c:{i}:v".encode() in raw}
    return StoredDoc(int(meta["content_version"] or 0), hashes, texts, vectors, meta)


class VectorStore:
    """Chunk vectors of documents; the Redis client is passed in."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r = client
        self._k = keys

    # -- keys --------------------------------------------------------------------------
    @property
    def _models(self) -> str:
        return self._k.ns("vec", "models")

    def _ids(self, model: str) -> str:
        return self._k.ns("vec", model, "ids")

    def _doc(self, model: str, content_id: str) -> str:
        return self._k.ns("vec", model, "doc", content_id)

    # -- reads -------------------------------------------------------------------------
    def models(self) -> list[str]:
        with translate_errors("vector store"):
            return sorted(_s(m) for m in self._r.smembers(self._models))  # type: ignore[union-attr,arg-type]

    def content_ids(self, model: str) -> list[str]:
        with translate_errors("vector store"):
            return sorted(_s(m) for m in self._r.smembers(self._ids(model)))  # type: ignore[union-attr,arg-type]

    def get(self, model: str, content_id: str) -> StoredDoc | None:
        with translate_errors("vector store"):
            return parse_doc(self._r.hgetall(self._doc(model, content_id)))  # type: ignore[arg-type]

    # -- writes ------------------------------------------------------------------------
    def upsert(self, model: str, content_id: str, content_version: int, chunks: list[Chunk],
               embed: Embedder, meta: dict[str, Any], title: str = "") -> UpsertResult:
        """Store ``chunks`` as the document's vectors for ``model``, embedding only the
        chunks whose text hash is not stored yet. Idempotent: a redelivered run embeds
        nothing and writes the same hash. An older ``content_version`` than the stored
        one is ignored (``stale``), so out-of-order runs cannot roll a document back."""
        key = self._doc(model, content_id)
        fresh: dict[str, bytes] = {}  # embedded in an earlier attempt of this call
        with translate_errors("vector store upsert"):
            for _attempt in range(5):
                with self._r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        stored = parse_doc(pipe.hgetall(key))  # type: ignore[arg-type]
                        if stored is not None and stored.content_version > content_version:
                            return UpsertResult(content_id, model, content_version, len(chunks),
                                                0, 0, 0, stale=True)
                        have = dict(stored.vectors) if stored else {}
                        have.update(fresh)
                        todo = sorted({c.hash: c.text for c in chunks if c.hash not in have}.items())
                        if todo:
                            vecs = embed([t for _, t in todo])
                            for (h, _), v in zip(todo, vecs, strict=True):
                                fresh[h] = np.asarray(v, dtype=np.float32).tobytes()
                            have.update(fresh)
                        new_hashes = {c.hash for c in chunks}
                        removed = len([h for h in (stored.hashes if stored else [])
                                       if h not in new_hashes])
                        mapping: dict[str, Any] = {
                            "content_version": content_version, "chunks": len(chunks),
                            "model_version": model, "updated_at": f"{time.time():.3f}",
                            "title": title[:500],
                            **{f: str(meta.get(f, "")) for f in
                               ("event_id", "run_id", "workflow", "workflow_version")},
                        }
                        for c in chunks:
                            mapping[f"c:{c.index}:h"] = c.hash
                            mapping[f"c:{c.index}:t"] = c.text
                            mapping[f"c:{c.index}:v"] = have[c.hash]
                        pipe.multi()
                        pipe.delete(key)
                        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                        pipe.sadd(self._ids(model), content_id)
                        pipe.sadd(self._models, model)
                        pipe.execute()
                        embedded = len(todo)
                        return UpsertResult(content_id, model, content_version, len(chunks),
                                            embedded, len(chunks) - embedded, removed)
                    except redis.WatchError:
                        continue
        raise TransientError(f"vector store: {content_id} kept changing during the upsert")

    def delete(self, content_id: str) -> int:
        """Delete the document's vectors under every model version; returns chunks removed."""
        removed = 0
        with translate_errors("vector store delete"):
            for model in self.models():
                key = self._doc(model, content_id)
                n = self._r.hget(key, "chunks")
                pipe = self._r.pipeline(transaction=True)
                pipe.delete(key)
                pipe.srem(self._ids(model), content_id)
                deleted, _ = pipe.execute()
                if deleted:
                    removed += int(n or 0)
        return removed

    def drop_model(self, model: str) -> int:
        """Forget every vector of an old model version (after a re-embed-all)."""
        with translate_errors("vector store drop"):
            ids = self.content_ids(model)
            pipe = self._r.pipeline(transaction=False)
            for cid in ids:
                pipe.delete(self._doc(model, cid))
            pipe.delete(self._ids(model))
            pipe.srem(self._models, model)
            pipe.execute()
        return len(ids)

    # -- search ------------------------------------------------------------------------
    def search(self, query: np.ndarray, model: str, k: int = 5) -> list[Hit]:
        """The ``k`` chunks nearest to the (normalised) ``query`` vector, best first."""
        ids = self.content_ids(model)
        if not ids:
            return []
        with translate_errors("vector search"):
            pipe = self._r.pipeline(transaction=False)
            for cid in ids:
                pipe.hgetall(self._doc(model, cid))
            raws = pipe.execute()
        rows: list[tuple[str, int, str, StoredDoc]] = []
        blobs: list[bytes] = []
        for cid, raw in zip(ids, raws, strict=True):
            doc = parse_doc(raw)
            if doc is None:
                continue
            for i, h in enumerate(doc.hashes):
                if h in doc.vectors:
                    rows.append((cid, i, doc.texts[i], doc))
                    blobs.append(doc.vectors[h])
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / (float(np.linalg.norm(q)) or 1.0)
        scores = matrix @ q
        top = np.argsort(-scores, kind="stable")[:k]
        return [
            Hit(rows[j][0], rows[j][1], float(scores[j]), _snippet(rows[j][2]),
                rows[j][3].meta["title"], rows[j][3].content_version, model)
            for j in top
        ]


def _snippet(text: str, n: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1].rsplit(" ", 1)[0] + "…"
