"""Task modules: every module in this package is imported by ``create_app`` and its
``@task`` declarations bound to the app. One module per workflow or concern."""

from __future__ import annotations

import importlib
import pkgutil


def import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
