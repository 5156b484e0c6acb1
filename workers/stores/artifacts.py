"""The artifact store: named blobs (model files, their metrics), local or on S3.

``ArtifactStore`` is the protocol the rest of the code sees; ``make_store(settings)``
picks the backend from ``settings.artifacts.backend``. Keys are relative, ``/``-separated
paths (``models/churn/<version>.json``); a key that could escape the store's root
(``..``, absolute paths) is refused.

Errors, whatever the backend: ``NotFound`` (no such key), ``ConfigError`` (the store
cannot work as configured: missing bucket, refused credentials), ``ProviderError``
(unreachable or failing for now: retry later).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from worker_mesh.mesh.errors import NotFound
from worker_mesh.mesh.settings import ArtifactSettings
from worker_mesh.workers.stores.keys import check_key


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> str:
        """Store ``data`` under ``key`` (replacing it); returns the artifact's URI."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; NotFound if there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...

    def uri(self, key: str) -> str: ...


class LocalArtifactStore:
    """Files under a directory. Writes are atomic (temp file + rename), so a reader never
    sees half an artifact and a crash leaves either the old or the new file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def put(self, key: str, data: bytes, *, content_type: str = "application/json") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {key!r} does not exist in {self.root}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)


def make_store(settings: ArtifactSettings) -> ArtifactStore:
    """The configured backend."""
    if settings.backend == "s3":
        from worker_mesh.workers.stores.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    return LocalArtifactStore(settings.local_dir)
