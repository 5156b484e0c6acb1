"""Generated content in Redis, idempotent per (content id, run).

Layout::

    <p>:content:doc:<content id>     hash: latest -> N, v:<N> -> JSON, run:<run id> -> N
    <p>:result:content:<content id>  JSON of the latest version (the result store key)

A run that saves twice (a redelivered task) gets the version it got the first time,
so a redelivery never creates a duplicate version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from worker_mesh.mesh.errors import TransientError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors


@dataclass(frozen=True)
class Saved:
    content_id: str
    version: int
    created: bool
    """False when this run had already saved it (redelivery)."""


class ContentStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r = client
        self._k = keys

    def _doc(self, content_id: str) -> str:
        return self._k.ns("content", "doc", content_id)

    def save(self, content_id: str, run_id: str, record: dict[str, Any]) -> Saved:
        """Store ``record`` as the next version of ``content_id`` unless ``run_id``
        already stored one. ``record`` gets ``version`` and ``saved_at`` added."""
        key = self._doc(content_id)
        with translate_errors("content store"):
            for _ in range(10):
                with self._r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        done = pipe.hget(key, f"run:{run_id}")
                        if done is not None:
                            return Saved(content_id, int(done), created=False)
                        version = int(pipe.hget(key, "latest") or 0) + 1
                        doc = record | {"content_id": content_id, "version": version,
                                        "run_id": run_id, "saved_at": round(time.time(), 3)}
                        blob = json.dumps(doc, ensure_ascii=False, sort_keys=True)
                        pipe.multi()
                        pipe.hset(key, mapping={"latest": version, f"v:{version}": blob,
                                                f"run:{run_id}": version})
                        pipe.set(self._k.result("content", content_id), blob)
                        pipe.execute()
                        return Saved(content_id, version, created=True)
                    except redis.WatchError:
                        continue
        raise TransientError(f"content store: {content_id} kept changing during the save")

    def get(self, content_id: str, version: int | None = None) -> dict[str, Any] | None:
        """A version of the content (default: the latest), or None."""
        with translate_errors("content store"):
            if version is None:
                raw = self._r.get(self._k.result("content", content_id))
            else:
                raw = self._r.hget(self._doc(content_id), f"v:{version}")
        return json.loads(raw) if raw else None  # type: ignore[arg-type]

    def versions(self, content_id: str) -> int:
        with translate_errors("content store"):
            return int(self._r.hget(self._doc(content_id), "latest") or 0)  # type: ignore[arg-type]
