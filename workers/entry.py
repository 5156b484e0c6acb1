"""Process entry point for Celery's own tooling (``celery -A workers.entry ...``).

The only module that builds settings at import time: it *is* the process edge.
``mesh worker`` / ``mesh beat`` use the same function without the import side effect.
"""

from __future__ import annotations

from celery import Celery


def build_app() -> Celery:
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.mesh.settings import MeshSettings
    from worker_mesh.workers.app import create_app

    settings = MeshSettings.load()
    load_workflows(settings)
    return create_app(settings)


app = build_app()
