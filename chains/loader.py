"""Importing the workflow modules so that they register themselves."""

from __future__ import annotations

import importlib
import pkgutil

import chains
from chains.registry import REGISTRY, WorkflowRegistry
from mesh.settings import MeshSettings

_SKIP = {"registry", "starter", "loader"}


def load_workflows(settings: MeshSettings | None = None) -> WorkflowRegistry:
    """Import every workflow module in ``chains/`` plus ``celery.extra_modules``."""
    for mod in pkgutil.iter_modules(chains.__path__):
        if mod.name not in _SKIP and not mod.name.startswith("_"):
            importlib.import_module(f"chains.{mod.name}")
    if settings is not None:
        for name in settings.celery.extra_modules:
            importlib.import_module(name)
    return REGISTRY
