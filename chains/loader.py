"""Importing the workflow modules so that they register themselves."""

from __future__ import annotations

import importlib
import pkgutil

import chains
from chains.registry import REGISTRY, WorkflowRegistry
from mesh.settings import MeshSettings

_SKIP = {"registry", "starter", "loader"}


def load_workflows(settings: MeshSettings | None = None) -> WorkflowRegistry:
    """Import every workflow module in ``chains/`` plus ``celery.extra_modules``; the
    registry returned holds the *enabled* ones (``workflows.builtin``,
    ``workflows.disabled``)."""
    for mod in pkgutil.iter_modules(chains.__path__):
        if mod.name not in _SKIP and not mod.name.startswith("_"):
            importlib.import_module(f"chains.{mod.name}")
    if settings is None:
        return REGISTRY
    for name in settings.celery.extra_modules:
        importlib.import_module(name)
    w = settings.workflows
    if w.builtin and not w.disabled:
        return REGISTRY
    enabled = WorkflowRegistry()
    for wf in REGISTRY:
        if wf.name in w.disabled or (not w.builtin and is_builtin(wf.name)):
            continue
        enabled.add(wf)
    return enabled


def is_builtin(workflow: str) -> bool:
    """Whether ``workflow`` belongs to the built-in pack (defined in ``chains/``)."""
    wf = REGISTRY.workflows.get(workflow)
    return wf is not None and getattr(wf.build, "__module__", "").startswith("chains.")
