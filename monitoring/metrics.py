"""The metrics facade: the only part of ``monitoring`` that core code imports.

Core code calls these small functions; they never raise (a metrics failure must not
fail a task or stop the dispatcher). Label values are bounded sets (event types,
workflows, task names, queues, outcomes, reasons), never an entity id: values outside
the known set are folded into ``other`` by ``bounded``.

Every metric here works in prometheus-client's multiprocess mode (a prefork worker's
children write to ``PROMETHEUS_MULTIPROC_DIR``; see ``monitoring.multiproc``), so gauges
declare how processes combine (``multiprocess_mode``). State that must outlive a
process (freshness, staleness of results, held GPU items) lives in Redis and is exported
by ``mesh exporter`` (``monitoring.collector``); ``bind_store`` gives this facade the
Redis client for the few functions that write such state.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])

_LABEL_RE = re.compile(r"^[A-Za-z0-9_.:@/-]{1,80}$")

# -- events (publisher, dispatcher) -------------------------------------------------------
EVENTS_PUBLISHED = Counter("mesh_events_published_total", "Events appended to the streams.",
                           ["type"])
EVENTS_OUTCOME = Counter(
    "mesh_events_outcome_total",
    "Stream entries by final outcome (started, deduplicated, coalesced, unrouted, "
    "dead_lettered).", ["type", "outcome"])
EVENTS_DEAD_LETTERED = Counter("mesh_events_dead_lettered_total",
                               "Entries sent to the dead-letter stream.", ["reason", "type"])
DISPATCH_LATENCY = Histogram(
    "mesh_dispatch_latency_seconds", "Publish (entry id time) to workflow start.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# -- workflows -------------------------------------------------------------------------------
WORKFLOW_RUNS = Counter("mesh_workflow_runs_total", "Workflow runs by outcome.",
                        ["workflow", "outcome"])
WORKFLOW_LAST_SUCCESS = Gauge("mesh_workflow_last_success_timestamp_seconds",
                              "Unix time of the workflow's last successful run.", ["workflow"],
                              multiprocess_mode="max")

# -- tasks (worker processes; fed by monitoring.celery_hooks) --------------------------------
TASK_DURATION = Histogram(
    "mesh_task_duration_seconds", "Run time of one task execution (any outcome).",
    ["task", "workflow"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800))
TASK_RUNS = Counter("mesh_task_runs_total",
                    "Task executions by outcome (succeeded, failed, retried); workflow is "
                    "'none' for tasks outside a workflow run.", ["task", "workflow", "outcome"])
TASK_RETRIES = Counter("mesh_task_retries_total", "Retries scheduled, by task.", ["task"])
TASK_FAILURES = Counter(
    "mesh_task_failures_total",
    "Final task failures (retries exhausted or not retryable), by task and error kind "
    "(permanent, transient, time_limit, other).", ["task", "error"])
TASKS_IN_PROGRESS = Gauge("mesh_tasks_in_progress", "Tasks executing now, by queue.", ["queue"],
                          multiprocess_mode="livesum")

# -- GPU pool ----------------------------------------------------------------------------------
GPU_BATCH_SIZE = Histogram("mesh_gpu_batch_size", "Items per GPU micro-batch.", ["task_type"],
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
GPU_BATCH_WAIT = Histogram(
    "mesh_gpu_batch_wait_seconds", "Time the first item of a micro-batch waited for it to fill.",
    ["task_type"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
GPU_SECONDS = Counter("mesh_gpu_seconds_total", "Seconds spent in GPU (or accelerator) work.",
                      ["task_type"])
GPU_HELD_ITEMS = Gauge("mesh_gpu_process_held_items",
                       "Bulk items this process holds for the off-peak window.", ["queue"],
                       multiprocess_mode="livesum")

# -- batched steps (any queue) ---------------------------------------------------------------
STEP_BATCH_SIZE = Histogram("mesh_step_batch_size", "Items per call of a batched step.", ["step"],
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
STEP_BATCH_WAIT = Histogram(
    "mesh_step_batch_wait_seconds", "Time the first item of a step's batch waited for it to fill.",
    ["step"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1))
FUSED_STEPS = Counter("mesh_fused_steps_total",
                      "Chain steps run inside the previous step's task (no hop), by task.", ["task"])
# -- flow control (rate limits, concurrency keys) ----------------------------------------------
FLOW_WAIT = Histogram(
    "mesh_ratelimit_wait_seconds",
    "How long a step waited for a rate limit or concurrency slot before it was admitted "
    "(0 when admitted at once); kind is rate or concurrency.", ["kind", "name", "priority"],
    buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
FLOW_ADMITTED = Counter("mesh_ratelimit_admitted_total", "Steps admitted by a limit.",
                        ["kind", "name", "priority"])
FLOW_THROTTLED = Counter(
    "mesh_ratelimit_throttled_total",
    "Times a step was told to wait (rescheduled, not retried) by a limit.",
    ["kind", "name", "priority"])
FLOW_PAUSED = Counter("mesh_ratelimit_paused_total",
                      "429 answers that paused a resource for every worker.", ["resource"])
FLOW_TOKENS = Counter("mesh_ratelimit_tokens_total",
                      "Tokens of admitted calls: estimated at admission, actual as reported.",
                      ["resource", "kind"])
PRIORITIES = frozenset({"urgent", "normal", "bulk"})

# -- models ------------------------------------------------------------------------------------
MODEL_INFO = Gauge("mesh_model_info", "Model version in use by this process (value 1).",
                   ["model", "version"], multiprocess_mode="livemax")

_model_versions: dict[str, str] = {}
_store: dict[str, Any] = {}

OUTCOMES_WORKFLOW = ("started", "succeeded", "failed", "cancelled")
OUTCOMES_TASK = ("succeeded", "failed", "retried")


def _safe(fn: F) -> F:
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            fn(*args, **kwargs)
        except Exception:  # pragma: no cover - metrics never break the caller
            log.debug("metrics update failed", exc_info=True)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def bounded(value: object, allowed: frozenset[str] | set[str] | None = None) -> str:
    """A label value from a bounded set: ``value`` when allowed (or, without a set,
    when it looks like a name), else ``other``. Keeps a bad producer from exploding the
    number of series."""
    text = str(value)
    if allowed is not None:
        return text if text in allowed else "other"
    return text if _LABEL_RE.match(text) else "other"


def _event_type(event_type: str) -> str:
    try:
        from worker_mesh.events.catalog import CATALOG

        return bounded(event_type, set(CATALOG.names()))
    except Exception:  # pragma: no cover - catalog import problems
        return "other"


# -- store (Redis) for state that outlives processes -----------------------------------------
def bind_store(client: Any, keys: Any) -> None:
    """Give the facade a Redis client and the mesh's ``Keys`` (worker processes and
    the exporter do this at start), for ``result_updated`` and friends."""
    _store["client"] = client
    _store["keys"] = keys


def results_key(keys: Any, kind: str) -> str:
    """Sorted set entity -> time its latest ``kind`` result was written (staleness)."""
    return str(keys.ns("mon", "results", kind))


# -- events ----------------------------------------------------------------------------------
@_safe
def event_published(event_type: str, n: int = 1) -> None:
    EVENTS_PUBLISHED.labels(_event_type(event_type)).inc(n)


@_safe
def event_outcome(event_type: str, outcome: str, n: int = 1) -> None:
    EVENTS_OUTCOME.labels(_event_type(event_type), bounded(outcome)).inc(n)


@_safe
def dead_lettered(reason: str, n: int = 1, event_type: str = "unknown") -> None:
    """``reason`` is a short category (``invalid``, ``poison``, ``too_large``...);
    ``event_type`` the type as written by the producer (the label folds it into the
    catalog's types or ``other``; Sentry gets it as written)."""
    et = event_type if event_type == "unknown" else _event_type(event_type)
    EVENTS_DEAD_LETTERED.labels(bounded(reason), et).inc(n)
    from worker_mesh.monitoring import sentry

    sentry.dead_lettered(bounded(reason), et, n, raw_type=str(event_type))


@_safe
def dispatch_latency(seconds: float) -> None:
    DISPATCH_LATENCY.observe(max(seconds, 0.0))


# -- workflows -------------------------------------------------------------------------------
@_safe
def workflow_run(workflow: str, outcome: str) -> None:
    """``outcome``: started, succeeded, failed, cancelled."""
    WORKFLOW_RUNS.labels(bounded(workflow), bounded(outcome, set(OUTCOMES_WORKFLOW))).inc()
    if outcome == "succeeded":
        WORKFLOW_LAST_SUCCESS.labels(bounded(workflow)).set(time.time())


@_safe
def declare_workflows(names: list[str]) -> None:
    """Create the zero-valued series of known workflows, so dashboards and rate()
    see them before the first run."""
    for name in names:
        for outcome in OUTCOMES_WORKFLOW:
            WORKFLOW_RUNS.labels(bounded(name), outcome)


# -- tasks -----------------------------------------------------------------------------------
@_safe
def declare_tasks(tasks: dict[str, str]) -> None:
    """Zero-valued series for every task (name -> queue) a worker process can run."""
    for name, queue in tasks.items():
        TASK_DURATION.labels(bounded(name), "none")
        TASK_RETRIES.labels(bounded(name))
        for outcome in OUTCOMES_TASK:
            TASK_RUNS.labels(bounded(name), "none", outcome)
        TASKS_IN_PROGRESS.labels(bounded(queue))


@_safe
def task_started(queue: str) -> None:
    TASKS_IN_PROGRESS.labels(bounded(queue)).inc()


@_safe
def task_finished(task: str, queue: str, seconds: float | None, outcome: str,
                  workflow: str | None = None) -> None:
    """One execution ended: ``outcome`` succeeded, failed or retried."""
    wf = bounded(workflow) if workflow else "none"
    TASKS_IN_PROGRESS.labels(bounded(queue)).dec()
    if seconds is not None:
        TASK_DURATION.labels(bounded(task), wf).observe(max(seconds, 0.0))
    TASK_RUNS.labels(bounded(task), wf, bounded(outcome, set(OUTCOMES_TASK))).inc()


@_safe
def task_retried(task: str) -> None:
    TASK_RETRIES.labels(bounded(task)).inc()


@_safe
def task_failed(task: str, error: str) -> None:
    """``error``: permanent, transient, time_limit or other."""
    TASK_FAILURES.labels(bounded(task),
                         bounded(error, {"permanent", "transient", "time_limit", "other"})).inc()


# -- GPU pool --------------------------------------------------------------------------------
@_safe
def gpu_batch(size: int, wait_s: float, task_type: str = "embed") -> None:
    """One micro-batch was formed: its size and how long its first item waited."""
    GPU_BATCH_SIZE.labels(bounded(task_type)).observe(size)
    GPU_BATCH_WAIT.labels(bounded(task_type)).observe(max(wait_s, 0.0))


@_safe
def gpu_seconds(seconds: float, task_type: str = "embed") -> None:
    """Time spent in a forward pass or training step on the accelerator."""
    GPU_SECONDS.labels(bounded(task_type)).inc(max(seconds, 0.0))


@_safe
def gpu_held(n: int, queue: str = "gpu-batch") -> None:
    """Bulk items this process holds back for the off-peak window (the durable count
    in Redis is exported by ``mesh exporter`` as ``mesh_gpu_held_items``)."""
    GPU_HELD_ITEMS.labels(bounded(queue)).set(n)


# -- batched and fused steps ---------------------------------------------------------------
@_safe
def step_batch(step: str, size: int, wait_s: float) -> None:
    """One call of a batched step: its size and how long its first item waited."""
    STEP_BATCH_SIZE.labels(bounded(step)).observe(size)
    STEP_BATCH_WAIT.labels(bounded(step)).observe(max(wait_s, 0.0))


@_safe
def step_fused(task: str) -> None:
    """A chain step ran in the task of the step before it (``workers.fusion``)."""
    FUSED_STEPS.labels(bounded(task)).inc()


# -- models and results ---------------------------------------------------------------------
@_safe
def model_in_use(model: str, version: str) -> None:
    """This process now serves ``version`` of ``model`` (the info metric's value 1)."""
    old = _model_versions.get(model)
    if old is not None and old != version:
        MODEL_INFO.labels(bounded(model), bounded(old)).set(0)
    _model_versions[model] = version
    MODEL_INFO.labels(bounded(model), bounded(version)).set(1)


@_safe
def result_updated(kind: str, entity: str, ts: float | None = None) -> None:
    """A fresh ``kind`` result (``churn``...) was stored for ``entity``. Kept in Redis
    (needs ``bind_store``), never as a label: the exporter exports the oldest one, so
    ``time() - mesh_result_oldest_timestamp_seconds`` is the worst staleness."""
    client, keys = _store.get("client"), _store.get("keys")
    if client is None or keys is None:
        return
    client.zadd(results_key(keys, bounded(kind)), {entity: time.time() if ts is None else ts})


@_safe
def result_removed(kind: str, entity: str) -> None:
    """The entity is gone (deleted content...): stop counting its result as stale."""
    client, keys = _store.get("client"), _store.get("keys")
    if client is not None and keys is not None:
        client.zrem(results_key(keys, bounded(kind)), entity)


# -- flow control --------------------------------------------------------------------------
@_safe
def flow_admitted(kind: str, name: str, priority: str, waited_s: float) -> None:
    """A step got its permit or slot after waiting ``waited_s`` in total."""
    labels = (bounded(kind, {"rate", "concurrency"}), bounded(name), bounded(priority, PRIORITIES))
    FLOW_ADMITTED.labels(*labels).inc()
    FLOW_WAIT.labels(*labels).observe(max(waited_s, 0.0))


@_safe
def flow_throttled(kind: str, name: str, priority: str) -> None:
    """A step was told to come back later (it is rescheduled, holding no worker)."""
    FLOW_THROTTLED.labels(bounded(kind, {"rate", "concurrency"}), bounded(name),
                          bounded(priority, PRIORITIES)).inc()


@_safe
def flow_paused(resource: str) -> None:
    FLOW_PAUSED.labels(bounded(resource)).inc()


@_safe
def flow_tokens(resource: str, estimated: int, actual: int) -> None:
    FLOW_TOKENS.labels(bounded(resource), "estimated").inc(max(estimated, 0))
    FLOW_TOKENS.labels(bounded(resource), "actual").inc(max(actual, 0))
