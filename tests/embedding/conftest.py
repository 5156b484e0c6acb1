"""One embedding model per test module: loading it takes seconds on a CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker_mesh.workers.embedding.model import EmbeddingModel, load_model


@pytest.fixture(scope="module")
def model() -> Iterator[EmbeddingModel]:
    yield load_model()
