"""The capacity benchmark's baseline: the churn workflow's three functions
(``workers.churn.scoring.merge``, ``score``, ``store``) as a plain Celery chain, no mesh.

Same Celery configuration as the mesh's (``workers.app.celery_config``: JSON, acks_late,
prefetch, Redis result backend, task events, track_started), same Redis, same data;
none of the mesh's machinery: no run ledger (no memoization, no re-driving), no
monitoring hooks, no chain fusion, no batching. Its queues live under their own key
prefix, so a mesh worker on the same Redis never sees its messages.

Run by the benchmark as ``python -m celery -A benchmarks._plain_worker worker ...`` with
the benchmark's ``MESH_*`` environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import celery_config
from worker_mesh.workers.churn import scoring
from worker_mesh.workers.runtime import Runtime

PREFIX_SUFFIX = "plain:"


def make_app(settings: MeshSettings) -> Celery:
    cfg = celery_config(settings)
    prefix = cfg["broker_transport_options"]["global_keyprefix"] + PREFIX_SUFFIX
    cfg["broker_transport_options"] = {**cfg["broker_transport_options"], "global_keyprefix": prefix}
    cfg["result_backend_transport_options"] = {**cfg["result_backend_transport_options"],
                                               "global_keyprefix": prefix}
    app = Celery("plain-chain", set_as_current=False)
    app.conf.update(cfg)
    return app


def register(app: Celery, settings: MeshSettings) -> None:
    """The three tasks, each a direct call of the mesh's function with a runtime."""
    rt: dict[str, Runtime] = {}

    def runtime() -> Runtime:
        if "rt" not in rt:
            rt["rt"] = Runtime(settings)
        return rt["rt"]

    @app.task(name="plain.churn.merge", queue="cpu")
    def merge(meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        return scoring.merge(runtime(), meta, event)

    @app.task(name="plain.churn.score", queue="cpu")
    def score(merged: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        return scoring.score(runtime(), merged, meta)

    @app.task(name="plain.churn.store", queue="cpu")
    def store(scored: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        return scoring.store(runtime(), scored, meta)


def worker_app() -> Celery:
    """The app ``celery -A benchmarks._plain_worker`` runs (settings from ``MESH_*``)."""
    settings = MeshSettings.load()
    app = make_app(settings)
    register(app, settings)
    return app
