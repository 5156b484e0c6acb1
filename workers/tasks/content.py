"""Content-generation tasks: thin wrappers around ``workers.content.pipeline``.

``generate`` is an API call: it waits on the LLM provider, so it runs on the ``io``
queue with the API-call retry policy (exponential backoff with jitter; a 429's
``Retry-After`` is honoured through ``RateLimited.delay_s``). Under flow control
(``flow.limits`` / ``flow.concurrency``) it may be told to wait: ``FlowTask`` then
reschedules it without spending a retry (``workers.flowctl``).
"""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.content import pipeline
from worker_mesh.workers.flowctl import FlowTask
from worker_mesh.workers.kinds import API_CALL, STANDARD, task


@task("mesh.content.prepare", kind=STANDARD, resource=Resource.CPU)
def prepare(rt: Any, meta: dict[str, Any], event_type: str, payload: dict[str, Any],
            event_id: str = "") -> dict[str, Any]:
    """Build the brief (what to write) from the triggering event."""
    return pipeline.prepare(rt.settings, event_type, payload, event_id)


@task("mesh.content.generate", kind=API_CALL, resource=Resource.IO, base=FlowTask)
def generate(rt: Any, brief: dict[str, Any], meta: dict[str, Any],
             wire: dict[str, str] | None = None) -> dict[str, Any]:
    """Generate and check, retrying with feedback; dead-letters after the last attempt."""
    return pipeline.generate(rt, brief, meta, wire)


@task("mesh.content.publish", kind=STANDARD, resource=Resource.IO)
def publish(rt: Any, draft: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Store the content (once per run) and publish ``content.updated``."""
    return pipeline.publish(rt, draft, meta)
