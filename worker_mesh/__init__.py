"""Worker Mesh: the public API, in one place.

For a team's own workflows (docs/your-workflow.md)::

    from worker_mesh import API_CALL, Event, RateLimited, Resource, chord, current_step, step, workflow

    class OrderPlaced(Event):            # an event type: a pydantic model
        event_type = "order.placed"
        entity_kind = "order"
        entity_field = "order_id"
        order_id: str

    @step(kind=API_CALL, resource=Resource.IO)
    def price(order: dict) -> dict: ...  # a step: a plain typed function with a kind

    @workflow("order-scoring", on=["order.placed"], sla_s=3600)
    def score(order: OrderPlaced):       # a workflow: event in, Celery canvas out
        return enrich.s(order.model_dump()) | price.s()

and for application code that publishes::

    from worker_mesh import publish
    publish(OrderPlaced(order_id="o-1"))

Everything here is re-exported, lazily (PEP 562: importing ``worker_mesh.events``
does not import Celery's canvas), from the subpackages that define it:
``worker_mesh.mesh`` (settings, errors, keys, Redis, the run ledger),
``worker_mesh.events``, ``worker_mesh.chains``, ``worker_mesh.workers``,
``worker_mesh.gpu_pool``, ``worker_mesh.monitoring``. In the repository those are the
top-level folders ``mesh/``, ``events/``, ``chains/``, ``workers/``, ``gpu_pool/``,
``monitoring/``; ``worker_mesh/`` holds a symbolic link to each, so a checkout, the type
checker and the import contracts see the same ``worker_mesh.*`` names as an install
(the wheel maps the folders under ``worker_mesh``: ``pyproject.toml``, ``package-dir``).
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.2.0"

_API: dict[str, tuple[str, str]] = {
    # authoring
    "Event": ("events.base", "Event"),
    "Envelope": ("events.base", "Envelope"),
    "step": ("workers.steps", "step"),
    "Step": ("workers.steps", "Step"),
    "current_step": ("workers.context", "current_step"),
    "StepContext": ("workers.context", "StepContext"),
    "workflow": ("chains.registry", "workflow"),
    "On": ("chains.registry", "On"),
    "Coalesce": ("chains.registry", "Coalesce"),
    "RunContext": ("chains.registry", "RunContext"),
    "Resource": ("gpu_pool.routing", "Resource"),
    "TaskKind": ("workers.kinds", "TaskKind"),
    "API_CALL": ("workers.kinds", "API_CALL"),
    "INFERENCE": ("workers.kinds", "INFERENCE"),
    "TRAINING": ("workers.kinds", "TRAINING"),
    "STANDARD": ("workers.kinds", "STANDARD"),
    "CRITICAL": ("workers.kinds", "CRITICAL"),
    "Flow": ("mesh.flow.declare", "Flow"),
    "Limit": ("mesh.flow.declare", "Limit"),
    "Concurrency": ("mesh.flow.declare", "Concurrency"),
    "Priority": ("mesh.flow.declare", "Priority"),
    "chain": ("celery", "chain"),
    "group": ("celery", "group"),
    "chord": ("celery", "chord"),
    # errors
    "MeshError": ("mesh.errors", "MeshError"),
    "PermanentError": ("mesh.errors", "PermanentError"),
    "TransientError": ("mesh.errors", "TransientError"),
    "RateLimited": ("mesh.errors", "RateLimited"),
    "ProviderError": ("mesh.errors", "ProviderError"),
    "NotFound": ("mesh.errors", "NotFound"),
    "ConfigError": ("mesh.errors", "ConfigError"),
    # publishing
    "publish": ("events", "publish"),
    "publish_many": ("events", "publish_many"),
    "configure": ("events", "configure"),
}

__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str) -> _Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'worker_mesh' has no attribute {name!r}")
    module, attr = target
    full = module if module == "celery" else f"{__name__}.{module}"
    value = getattr(_importlib.import_module(full), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
