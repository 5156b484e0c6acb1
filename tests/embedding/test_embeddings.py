"""Real embeddings from the packaged all-MiniLM-L6-v2 (offline, CPU here)."""

from __future__ import annotations

import re

import numpy as np

from worker_mesh.workers.embedding.model import EmbeddingModel, embed_texts, model_version, pick_device


def test_similar_texts_are_closer_than_unrelated_ones(model: EmbeddingModel) -> None:
    v = embed_texts(model, [
        "How do I reset my account password?",
        "I forgot my password and cannot log in to my account.",
        "The recipe needs two cups of flour and three eggs.",
    ])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert similar > unrelated + 0.3, (similar, unrelated)


def test_embedding_is_deterministic_and_empty_input_is_fine(model: EmbeddingModel) -> None:
    a = embed_texts(model, ["churn prediction"])
    b = embed_texts(model, ["churn prediction"])
    assert np.allclose(a, b, atol=1e-6)
    assert embed_texts(model, []).shape == (0, 384)


def test_model_version_names_the_weights(model: EmbeddingModel) -> None:
    assert re.fullmatch(r"all-MiniLM-L6-v2@[0-9a-f]{12}", model_version())
    assert model.version == model_version()
    assert model.device == pick_device(None)
    assert "cpu" in repr(model) or "cuda" in repr(model)
