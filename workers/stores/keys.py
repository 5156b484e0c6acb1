"""Artifact keys: the one rule every artifact backend applies (local directory, S3)."""

from __future__ import annotations

from pathlib import PurePosixPath

from worker_mesh.mesh.errors import ConfigError

__all__ = ["check_key"]


def check_key(key: str) -> str:
    """A safe relative key, or ConfigError: keys come from code, never from users, so a
    bad one is a bug, not bad input."""
    p = PurePosixPath(key)
    if not key or p.is_absolute() or ".." in p.parts or key.endswith("/") or "\\" in key:
        raise ConfigError(f"invalid artifact key {key!r}")
    return str(p)
