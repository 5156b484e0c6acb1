"""Chunking: deterministic, paragraph-aligned, bounded, with a clear size error."""

from __future__ import annotations

import itertools

import pytest

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.workers.embedding.chunking import ContentTooLarge, chunk_text, document_text

KW = {"chunk_chars": 300, "overlap_chars": 40, "max_chars": 50_000}


def long_doc(n: int = 12, edit: int | None = None) -> str:
    paras = []
    for i in range(n):
        words = " ".join(f"word{i}x{j}" for j in range(25))
        text = f"Paragraph {i} talks about topic {i}. {words}."
        if i == edit:
            text = f"Paragraph {i} was rewritten entirely by an editor. {words}."
        paras.append(text)
    return "\n\n".join(paras)


def test_same_text_gives_same_chunks_within_the_size() -> None:
    a = chunk_text(long_doc(), **KW)
    b = chunk_text(long_doc(), **KW)
    assert a == b
    assert len(a) > 5
    assert all(len(c.text) <= KW["chunk_chars"] + 1 for c in a)
    assert [c.index for c in a] == list(range(len(a)))


def test_chunks_overlap_with_the_end_of_the_previous_one() -> None:
    chunks = chunk_text(long_doc(), **KW)
    for prev, cur in itertools.pairwise(chunks):
        first_word = cur.text.split(" ", 1)[0]
        assert prev.text.endswith(first_word) or f"{first_word} " in prev.text[-KW["overlap_chars"] - 20:]


def test_editing_one_paragraph_changes_only_nearby_chunks() -> None:
    before = [c.hash for c in chunk_text(long_doc(), **KW)]
    after = [c.hash for c in chunk_text(long_doc(edit=6), **KW)]
    assert len(before) == len(after)
    changed = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]
    assert 1 <= len(changed) <= 2, changed
    assert changed[0] >= 5


def test_a_long_paragraph_is_cut_at_word_boundaries() -> None:
    text = " ".join(f"w{i}" for i in range(400))
    chunks = chunk_text(text, **KW)
    assert len(chunks) > 3
    words = {w for c in chunks for w in c.text.split()}
    assert words == {f"w{i}" for i in range(400)}


def test_too_large_content_fails_with_the_setting_name() -> None:
    with pytest.raises(ContentTooLarge, match="MESH_WORKFLOWS_MAX_CONTENT_CHARS"):
        chunk_text("x" * 501, chunk_chars=300, overlap_chars=10, max_chars=500, what="content d1")


def test_overlap_larger_than_half_a_chunk_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        chunk_text("hello", chunk_chars=100, overlap_chars=60, max_chars=500)


def test_title_is_its_own_first_paragraph() -> None:
    chunks = chunk_text(document_text("Pricing", "Body text here."), **KW)
    assert chunks[0].text.startswith("Pricing")
