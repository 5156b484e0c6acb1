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

Everything here is re-exported from the packages that define it (``events``,
``chains``, ``workers``, ``gpu_pool``, ``mesh``); this module adds nothing of its own.
"""

from __future__ import annotations

from celery import chain, chord, group

from worker_mesh.chains.registry import REGISTRY as _REGISTRY
from worker_mesh.chains.registry import Coalesce, On, RunContext
from worker_mesh.events import configure, publish, publish_many
from worker_mesh.events.base import Envelope, Event
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import (
    ConfigError,
    MeshError,
    NotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from worker_mesh.mesh.flow.declare import Concurrency, Flow, Limit, Priority
from worker_mesh.workers.kinds import API_CALL, CRITICAL, INFERENCE, STANDARD, TRAINING, TaskKind
from worker_mesh.workers.steps import Step, StepContext, current_step, step

__version__ = "0.2.0"

workflow = _REGISTRY.workflow
"""``@workflow(name, on=[...], version="1", coalesce=None, sla_s=3600, results=None)``."""

__all__ = [
    "API_CALL",
    "CRITICAL",
    "INFERENCE",
    "STANDARD",
    "TRAINING",
    "Coalesce",
    "Concurrency",
    "ConfigError",
    "Envelope",
    "Event",
    "Flow",
    "Limit",
    "MeshError",
    "NotFound",
    "On",
    "PermanentError",
    "Priority",
    "ProviderError",
    "RateLimited",
    "Resource",
    "RunContext",
    "Step",
    "StepContext",
    "TaskKind",
    "TransientError",
    "__version__",
    "chain",
    "chord",
    "configure",
    "current_step",
    "group",
    "publish",
    "publish_many",
    "step",
    "workflow",
]
