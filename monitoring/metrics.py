"""The metrics facade: the only part of ``monitoring`` that core code imports.

Core code calls these small functions; they never raise (a metrics failure must not
fail a task or stop the dispatcher). Label values are bounded sets (event types,
workflows, task names, queues, outcomes, reasons), never an entity id.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter("mesh_events_published_total", "Events appended to the streams.",
                           ["type"])
EVENTS_OUTCOME = Counter(
    "mesh_events_outcome_total",
    "Stream entries by final outcome (started, deduplicated, coalesced, unrouted, "
    "dead_lettered).", ["type", "outcome"])
EVENTS_DEAD_LETTERED = Counter("mesh_events_dead_lettered_total",
                               "Entries sent to the dead-letter stream.", ["reason"])
DISPATCH_LATENCY = Histogram(
    "mesh_dispatch_latency_seconds", "Publish (entry id time) to workflow start.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WORKFLOW_RUNS = Counter("mesh_workflow_runs_total", "Workflow runs by outcome.",
                        ["workflow", "outcome"])
WORKFLOW_LAST_SUCCESS = Gauge("mesh_workflow_last_success_timestamp_seconds",
                              "Unix time of the workflow's last successful run.", ["workflow"],
                              multiprocess_mode="max")


def _safe(fn):  # type: ignore[no-untyped-def]
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            fn(*args, **kwargs)
        except Exception:  # pragma: no cover - metrics never break the caller
            log.debug("metrics update failed", exc_info=True)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_safe
def event_published(event_type: str, n: int = 1) -> None:
    EVENTS_PUBLISHED.labels(event_type).inc(n)


@_safe
def event_outcome(event_type: str, outcome: str, n: int = 1) -> None:
    EVENTS_OUTCOME.labels(event_type, outcome).inc(n)


@_safe
def dead_lettered(reason: str, n: int = 1) -> None:
    """``reason`` is a short category (``invalid``, ``poison``, ``too_large``...)."""
    EVENTS_DEAD_LETTERED.labels(reason).inc(n)


@_safe
def dispatch_latency(seconds: float) -> None:
    DISPATCH_LATENCY.observe(max(seconds, 0.0))


@_safe
def workflow_run(workflow: str, outcome: str) -> None:
    """``outcome``: started, succeeded, failed."""
    WORKFLOW_RUNS.labels(workflow, outcome).inc()
    if outcome == "succeeded":
        WORKFLOW_LAST_SUCCESS.labels(workflow).set(time.time())
