"""Loaded into a worker (``MESH_CELERY_EXTRA_MODULES``) to play the embedding model of
a previous release: same weights, but vectors are filed under ``OLD_EMBEDDING_VERSION``, as
they would be by the model version before an upgrade."""

from __future__ import annotations

from tests.runs.flows import OLD_EMBEDDING_VERSION
from worker_mesh.workers.embedding import model

model.model_version = lambda: OLD_EMBEDDING_VERSION  # type: ignore[assignment]
