"""Deterministic, paragraph-aligned chunking of documents for embedding.

Why paragraph-aligned: re-embedding must touch only what changed. If chunks were fixed
character windows over the whole text, inserting one word would shift every later
window and invalidate every later vector. Here a chunk boundary is always a paragraph
boundary (a blank line), except inside a paragraph longer than a chunk, which is cut
into word-aligned windows. Editing one paragraph therefore changes its own chunk(s),
plus the next chunk whose overlap prefix repeats the end of the edited one.

Small paragraphs (headings, one-liners) are packed with their neighbours until a chunk
holds at least half its budget, so the index is not flooded with tiny chunks.

Each chunk is ``overlap`` (the tail of the previous chunk's own text, cut at a word
boundary) + body; bodies are at most ``chunk_chars - overlap_chars`` characters, so
a chunk never exceeds ``chunk_chars``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from worker_mesh.mesh.errors import ConfigError, PermanentError

_PARA_SPLIT = re.compile(r"\n\s*\n")
_WS = re.compile(r"[ \t\r\f\v]+")


class ContentTooLarge(PermanentError):
    """The document is longer than ``workflows.max_content_chars``: never retried."""


@dataclass(frozen=True)
class Chunk:
    """One unit of embedding: its position, its exact text and that text's hash."""

    index: int
    text: str

    @property
    def hash(self) -> str:
        return text_hash(self.text)


def text_hash(text: str) -> str:
    """Stable hash of a chunk's text (the re-embedding skip test compares these)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def document_text(title: str, body: str) -> str:
    """The text that is chunked: the title is its own first paragraph, so a title
    search finds the document and a title edit touches only the first chunk."""
    title = title.strip()
    return f"{title}\n\n{body}" if title else body


def paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, with runs of spaces squeezed."""
    out = []
    for raw in _PARA_SPLIT.split(text):
        p = "\n".join(_WS.sub(" ", line).strip() for line in raw.strip().splitlines())
        p = p.strip()
        if p:
            out.append(p)
    return out


def _windows(text: str, size: int) -> list[str]:
    """Cut a long paragraph into pieces of at most ``size`` chars at word boundaries."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = rest.rfind(" ", size // 2, size + 1)
        if cut <= 0:
            cut = size
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _tail(text: str, n: int) -> str:
    """The last ``n`` chars of ``text``, starting at a word boundary when possible."""
    if n <= 0 or not text:
        return ""
    if len(text) <= n:
        return text
    tail = text[-n:]
    space = tail.find(" ")
    return tail[space + 1:] if 0 <= space < len(tail) - 1 else tail


def chunk_text(
    text: str, *, chunk_chars: int, overlap_chars: int, max_chars: int, what: str = "content"
) -> list[Chunk]:
    """Split ``text`` into chunks; raises ContentTooLarge past ``max_chars``.

    Deterministic: the same text and settings always give the same chunks.
    """
    if len(text) > max_chars:
        raise ContentTooLarge(
            f"{what} is {len(text)} characters, the limit is {max_chars} "
            "(workflows.max_content_chars, MESH_WORKFLOWS_MAX_CONTENT_CHARS)"
        )
    if overlap_chars * 2 > chunk_chars:
        raise ConfigError(
            "workflows.embed_chunk_overlap_chars must be at most half of embed_chunk_chars"
        )
    body_max = chunk_chars - overlap_chars
    units: list[str] = []
    for para in paragraphs(text):
        units.extend(_windows(para, body_max))
    bodies: list[str] = []
    current = ""
    for unit in units:
        if not current:
            current = unit
        elif len(current) < body_max // 2 and len(current) + 2 + len(unit) <= body_max:
            current = f"{current}\n\n{unit}"
        else:
            bodies.append(current)
            current = unit
    if current:
        bodies.append(current)
    chunks: list[Chunk] = []
    prev = ""
    for i, body in enumerate(bodies):
        overlap = _tail(prev, overlap_chars)
        chunks.append(Chunk(i, f"{overlap} {body}" if overlap else body))
        prev = body
    return chunks
