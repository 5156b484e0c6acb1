"""Rendered overlays, once per session: kustomize runs once per overlay, and each test
gets a deep copy so a test that breaks a manifest on purpose cannot leak into another."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from worker_mesh.workers.cli import _k8s

Objs = list[dict]


@pytest.fixture(scope="session")
def rendered() -> dict[str, Objs]:
    return {o: _k8s.load_objects(_k8s.render(o)) for o in _k8s.overlays()}


@pytest.fixture
def overlay_objs(rendered: dict[str, Objs]) -> Callable[[str], Objs]:
    return lambda overlay: copy.deepcopy(rendered[overlay])


def find(objs: Objs, kind: str, name: str) -> dict:
    """The object of that kind whose name is ``name`` (or ``name-<hash>`` for generated ones)."""
    hits = [o for o in objs if o["kind"] == kind
            and (o["metadata"]["name"] == name or o["metadata"]["name"].startswith(name + "-"))]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} matches"
    return hits[0]
