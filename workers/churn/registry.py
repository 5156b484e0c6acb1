"""The model registry: versions with their metrics (Redis), artifacts (artifact store),
and the ``promoted`` pointer that scoring follows.

Keys (all under the mesh prefix, built with ``Keys.ns``)::

    <p>:model:<name>:versions   hash  version -> JSON {version, sha256, artifact, metrics, ...}
    <p>:model:<name>:promoted   hash  {version, seq, promoted_at, reason}
    <p>:model:<name>:log        list  JSON decisions (registrations, promotions, rejections), newest first

``seq`` grows by one on every promotion (rollbacks included). Results store it with each
score, so a rescore with a newer promotion replaces an older score of the same profile,
and a late score from an older promotion never replaces a newer one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from worker_mesh.mesh.errors import NotFound, PermanentError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.workers.churn.model import ChurnModel, version_of
from worker_mesh.workers.stores.artifacts import ArtifactStore

LOG_LENGTH = 200


@dataclass(frozen=True)
class Pointer:
    """The promoted version and the promotion's sequence number."""

    version: str
    seq: int
    promoted_at: float = 0.0
    reason: str = ""


class ModelRegistry:
    def __init__(self, client: redis.Redis, keys: Keys, store: ArtifactStore,
                 name: str = "churn") -> None:
        self.client = client
        self.keys = keys
        self.store = store
        self.name = name

    # -- keys ------------------------------------------------------------------------
    @property
    def versions_key(self) -> str:
        return self.keys.ns("model", self.name, "versions")

    @property
    def promoted_key(self) -> str:
        return self.keys.ns("model", self.name, "promoted")

    @property
    def log_key(self) -> str:
        return self.keys.ns("model", self.name, "log")

    def artifact_key(self, version: str) -> str:
        return f"models/{self.name}/{version}.json"

    # -- versions ----------------------------------------------------------------------
    def register(self, model: ChurnModel, metrics: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store the artifact (and its metrics next to it) and list the version.

        Idempotent: the version is the content hash, so registering the same model again
        (a redelivered training task) rewrites identical bytes and keeps the first
        registration's record."""
        data = model.to_json()
        version = version_of(data)
        uri = self.store.put(self.artifact_key(version), data)
        record = {
            "version": version,
            "sha256": hashlib.sha256(data).hexdigest(),
            "artifact": uri,
            "metrics": metrics,
            "info": model.info,
            "registered_at": time.time(),
            **(extra or {}),
        }
        self.store.put(f"models/{self.name}/{version}.metrics.json",
                       json.dumps(record, sort_keys=True, indent=1).encode())
        with translate_errors("model registry"):
            if self.client.hsetnx(self.versions_key, version, json.dumps(record)):
                self._log({"event": "registered", "version": version, "metrics": metrics})
        return self.get(version)

    def get(self, version: str) -> dict[str, Any]:
        with translate_errors("model registry"):
            raw = self.client.hget(self.versions_key, version)
        if raw is None:
            raise NotFound(f"{self.name} model version {version!r} is not registered")
        return json.loads(raw)  # type: ignore[no-any-return]

    def versions(self) -> list[dict[str, Any]]:
        """Every registered version, oldest first, with ``promoted`` set on the current one."""
        with translate_errors("model registry"):
            raw = self.client.hgetall(self.versions_key)
        ptr = self.promoted()
        out = [json.loads(v) for v in raw.values()]
        for rec in out:
            rec["promoted"] = ptr is not None and rec["version"] == ptr.version
        return sorted(out, key=lambda r: (r.get("registered_at", 0), r["version"]))

    def load(self, version: str) -> ChurnModel:
        """The model of a version, its bytes checked against the registered sha256."""
        record = self.get(version)
        data = self.store.get(self.artifact_key(version))
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise PermanentError(f"artifact of {self.name} model {version} does not match its sha256")
        return ChurnModel.from_json(data)

    # -- promotion ---------------------------------------------------------------------
    def promoted(self) -> Pointer | None:
        with translate_errors("model registry"):
            raw = self.client.hgetall(self.promoted_key)
        return self.parse_pointer(raw)

    @staticmethod
    def parse_pointer(raw: Any) -> Pointer | None:
        """The pointer from the promoted hash's fields (read by callers that pipeline it
        with other reads)."""
        if not raw or (b"version" not in raw and "version" not in raw):
            return None
        text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
        return Pointer(text["version"], int(text.get("seq", "0")),
                       float(text.get("promoted_at", "0")), text.get("reason", ""))

    def promote(self, version: str, reason: str = "") -> Pointer:
        """Point scoring at ``version`` (also a rollback: any registered version)."""
        self.get(version)  # NotFound for an unknown version
        now = time.time()
        with translate_errors("model registry"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.promoted_key, mapping={"version": version, "promoted_at": repr(now),
                                                  "reason": reason[:200]})
            pipe.hincrby(self.promoted_key, "seq", 1)
            _, seq = pipe.execute()
        self._log({"event": "promoted", "version": version, "seq": int(seq), "reason": reason})
        from worker_mesh.monitoring import metrics

        metrics.model_in_use(self.name, version)
        return Pointer(version, int(seq), now, reason)

    # -- decisions log -------------------------------------------------------------------
    def _log(self, entry: dict[str, Any]) -> None:
        with translate_errors("model registry"):
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.log_key, json.dumps({"at": time.time(), **entry}, default=str))
            pipe.ltrim(self.log_key, 0, LOG_LENGTH - 1)
            pipe.execute()

    def record(self, entry: dict[str, Any]) -> None:
        """Append a decision (e.g. a retraining that kept the current model)."""
        self._log(entry)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with translate_errors("model registry"):
            return [json.loads(x) for x in self.client.lrange(self.log_key, 0, limit - 1)]
