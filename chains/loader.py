"""Importing the workflow modules so that they register themselves.

A team's package registers its steps, event types and workflows by being imported in
every mesh process, named either by the entry point group ``worker_mesh.workflows``
(in its own ``pyproject.toml``)::

    [project.entry-points."worker_mesh.workflows"]
    orders = "orders.workflows"

or by the setting ``MESH_CELERY_EXTRA_MODULES='["orders.workflows"]'``. A module that
cannot be imported stops the process with one error naming where it was named, the
expected form and the import error.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from worker_mesh import chains
from worker_mesh.chains.registry import REGISTRY, WorkflowRegistry
from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings import MeshSettings

ENTRY_POINT_GROUP = "worker_mesh.workflows"

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
    import_extra_modules(settings)
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


def import_extra_modules(settings: MeshSettings) -> list[str]:
    """Import every module a team's packages name (entry points, then the setting);
    returns their names. Raises ConfigError naming the source and the module."""
    named: list[tuple[str, str]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        named.append((f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}", ep.value.split(":")[0]))
    named += [("MESH_CELERY_EXTRA_MODULES", name) for name in settings.celery.extra_modules]
    done: list[str] = []
    for source, name in named:
        if name in done:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"{source}: cannot import module {name!r} ({type(exc).__name__}: {exc}); "
                "expected importable module names, e.g. MESH_CELERY_EXTRA_MODULES="
                "'[\"orders.workflows\"]' with the package installed or on PYTHONPATH") from exc
        done.append(name)
    return done
