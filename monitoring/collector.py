"""The Redis collector of ``mesh exporter``: the mesh's shared state as metrics,
read at scrape time (so it is never stale and needs no process of its own to update).

Series (all ``mesh_*``, base units, labels from bounded sets):

==============================================  ===========================================
stream / dispatcher                             ``mesh_stream_length{partition}``,
                                                ``mesh_stream_entries_added_total{partition}``,
                                                ``mesh_consumer_lag{partition}``,
                                                ``mesh_consumer_pending{partition}``,
                                                ``mesh_dispatchers_alive``,
                                                ``mesh_stream_outcomes_total{outcome}``
dead letters                                    ``mesh_dlq_length``, ``mesh_dlq_entries_added_total``
Celery queues / workers                         ``mesh_queue_length{queue}``,
                                                ``mesh_queue_reserved_tasks{queue}``,
                                                ``mesh_workers_alive{queue}``,
                                                ``mesh_worker_processes{queue}``,
                                                ``mesh_tasks_running{queue}``,
                                                ``mesh_task_running_max_age_seconds{task}``,
                                                ``mesh_task_time_limit_seconds{task}``
runs (the run ledger)                           ``mesh_runs_total{state}``, ``mesh_runs_in_flight``,
                                                ``mesh_runs_overdue{workflow}``,
                                                ``mesh_runs_redriven_total``
workflows                                       ``mesh_workflow_last_success_timestamp_seconds``,
                                                ``mesh_workflow_sla_seconds``,
                                                ``mesh_workflow_registered_timestamp_seconds``,
                                                ``mesh_workflow_finished_total{workflow,outcome}``
results                                         ``mesh_result_oldest_timestamp_seconds{kind}``,
                                                ``mesh_results{kind}``
GPU pool                                        ``mesh_gpu_held_items{queue}``,
                                                ``mesh_gpu_released_total{why}``,
                                                ``mesh_gpu_recorded_seconds_total{task_type,...}``,
                                                ``mesh_gpu_offpeak_open``,
                                                ``mesh_gpu_offpeak_next_start_timestamp_seconds``,
                                                ``mesh_gpu_offpeak_end_timestamp_seconds``
flow control                                    ``mesh_ratelimit_*``, ``mesh_concurrency_running``
                                                (``monitoring.flow_collector``)
exporter                                        ``mesh_exporter_up``,
                                                ``mesh_exporter_scrape_duration_seconds``
==============================================  ===========================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker_mesh.gpu_pool.routing import ALL_QUEUES, GPU_QUEUES
from worker_mesh.mesh.outage import OutageLog
from worker_mesh.monitoring.flow_collector import flow_families
from worker_mesh.monitoring.snapshot import Snapshot, take

log = logging.getLogger(__name__)


class MeshCollector(Collector):
    """Reads a ``Snapshot`` from Redis at each scrape. ``workflows`` returns the
    registered workflows (name, sla_s)."""

    def __init__(self, client: Any, settings: Any, workflows: Callable[[], list[Any]]) -> None:
        self._client = client
        self._settings = settings
        self._workflows = workflows
        self._outage = OutageLog(log, "Redis (exporter scrape)")

    def describe(self) -> list[Any]:
        return []  # no fixed description: collected at scrape time only

    def collect(self) -> Iterator[Any]:
        t0 = time.monotonic()
        up = GaugeMetricFamily("mesh_exporter_up", "1 when the exporter could read Redis.")
        try:
            snap = take(self._client, self._settings, self._workflows())
        except Exception as exc:
            self._outage.failed(exc)  # one line per change of state, not per scrape
            up.add_metric([], 0)
            yield up
            return
        self._outage.ok()
        up.add_metric([], 1)
        yield up
        yield from _stream_families(snap)
        yield from _queue_families(snap, self._settings)
        yield from _workflow_families(snap)
        yield from _gpu_families(snap)
        yield from flow_families(self._client, self._settings)
        d = GaugeMetricFamily("mesh_exporter_scrape_duration_seconds", "Time to read Redis.")
        d.add_metric([], time.monotonic() - t0)
        yield d


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _stream_families(snap: Snapshot) -> Iterator[Any]:
    length = _gauge("mesh_stream_length", "Entries in the event stream.", ["partition"])
    added = CounterMetricFamily("mesh_stream_entries_added", "Entries ever appended (published).",
                                labels=["partition"])
    lag = _gauge("mesh_consumer_lag", "Entries not yet read by the dispatchers' group.",
                 ["partition"])
    pending = _gauge("mesh_consumer_pending", "Entries read but not yet acknowledged.",
                     ["partition"])
    consumers = _gauge("mesh_consumer_group_consumers", "Consumers known to the group.",
                       ["partition"])
    for s in snap.streams:
        p = str(s.partition)
        length.add_metric([p], s.length)
        added.add_metric([p], s.entries_added)
        lag.add_metric([p], s.lag if s.lag is not None else float("nan"))
        pending.add_metric([p], s.pending)
        consumers.add_metric([p], s.consumers)
    yield from (length, added, lag, pending, consumers)
    alive = _gauge("mesh_dispatchers_alive",
                   "Dispatchers that read from the stream recently (max over partitions).")
    alive.add_metric([], snap.dispatchers_alive)
    yield alive
    outcomes = CounterMetricFamily("mesh_stream_outcomes", "Stream entries by recorded outcome.",
                                   labels=["outcome"])
    for name in sorted(set(snap.outcomes) | {"started", "deduplicated", "coalesced",
                                              "dead_lettered"}):
        outcomes.add_metric([name], snap.outcomes.get(name, 0))
    yield outcomes
    dlq = _gauge("mesh_dlq_length", "Entries in the dead-letter stream.")
    dlq.add_metric([], snap.dlq_length)
    dlq_added = CounterMetricFamily("mesh_dlq_entries_added", "Entries ever dead-lettered.")
    dlq_added.add_metric([], snap.dlq_added)
    yield from (dlq, dlq_added)


def _queue_families(snap: Snapshot, settings: Any) -> Iterator[Any]:
    depth = _gauge("mesh_queue_length", "Tasks waiting in the Celery queue.", ["queue"])
    reserved = _gauge("mesh_queue_reserved_tasks",
                      "Tasks delivered to a worker and not yet acknowledged.", ["queue"])
    workers = _gauge("mesh_workers_alive", "Workers with a recent heartbeat consuming the queue.",
                     ["queue"])
    procs = _gauge("mesh_worker_processes", "Worker processes (concurrency) serving the queue.",
                   ["queue"])
    running = _gauge("mesh_tasks_running", "Tasks executing now.", ["queue"])
    per_queue: dict[str, int] = dict.fromkeys(ALL_QUEUES, 0)
    age: dict[str, float] = {}
    limit: dict[str, float] = {}
    for r in snap.running:
        q = str(r.get("queue")) if r.get("queue") in per_queue else "other"
        per_queue[q] = per_queue.get(q, 0) + 1
        name = str(r.get("task", "other"))
        age[name] = max(age.get(name, 0.0), float(r["age_s"]))
        limit[name] = float(r.get("limit_s") or settings.celery.task_time_limit_s)
    for q in ALL_QUEUES:
        depth.add_metric([q], snap.queues.get(q, 0))
        reserved.add_metric([q], snap.reserved.get(q, 0))
        workers.add_metric([q], snap.workers.get(q, 0))
        procs.add_metric([q], snap.worker_processes.get(q, 0))
    for q, n in per_queue.items():
        running.add_metric([q], n)
    yield from (depth, reserved, workers, procs, running)
    oldest = _gauge("mesh_task_running_max_age_seconds",
                    "Age of the longest-running execution of the task.", ["task"])
    limits = _gauge("mesh_task_time_limit_seconds", "Hard time limit of the task.", ["task"])
    for name in sorted(age):
        oldest.add_metric([name], age[name])
        limits.add_metric([name], limit[name])
    yield from (oldest, limits)


def _workflow_families(snap: Snapshot) -> Iterator[Any]:
    last = _gauge("mesh_workflow_last_success_timestamp_seconds",
                  "Unix time of the workflow's last successful run (from the run statistics).",
                  ["workflow"])
    sla = _gauge("mesh_workflow_sla_seconds", "Freshness SLA: a success is expected this often.",
                 ["workflow"])
    reg = _gauge("mesh_workflow_registered_timestamp_seconds",
                 "When the exporter first saw the workflow (freshness of never-run workflows).",
                 ["workflow"])
    fin = CounterMetricFamily("mesh_workflow_finished", "Recorded workflow run ends.",
                              labels=["workflow", "outcome"])
    retries = CounterMetricFamily("mesh_workflow_task_retries", "Task retries within the workflow.",
                                  labels=["workflow"])
    for w in snap.workflows:
        if w.last_success is not None:
            last.add_metric([w.name], w.last_success)
        sla.add_metric([w.name], w.sla_s)
        if w.registered_at is not None:
            reg.add_metric([w.name], w.registered_at)
        fin.add_metric([w.name, "succeeded"], w.successes)
        fin.add_metric([w.name, "failed"], w.failures)
        retries.add_metric([w.name], w.retries)
    yield from (last, sla, reg, fin, retries)
    yield from _run_families(snap)
    oldest = _gauge("mesh_result_oldest_timestamp_seconds",
                    "Write time of the stalest stored result of the kind.", ["kind"])
    count = _gauge("mesh_results", "Entities with a stored result of the kind.", ["kind"])
    max_age = _gauge("mesh_result_max_age_seconds",
                     "Age past which a stored result of the kind is stale (declared).", ["kind"])
    for kind, (n, ts) in sorted(snap.results.items()):
        count.add_metric([kind], n)
        if ts is not None:
            oldest.add_metric([kind], ts)
        max_age.add_metric([kind], snap.result_max_age.get(kind, 172_800))
    yield from (oldest, count, max_age)


def _run_families(snap: Snapshot) -> Iterator[Any]:
    """The run ledger: runs by outcome, in flight, overdue (stuck) and re-driven."""
    runs = CounterMetricFamily("mesh_runs", "Workflow runs recorded by the run ledger, by "
                               "state reached (started, succeeded, failed, cancelled).",
                               labels=["state"])
    for state in ("started", "succeeded", "failed", "cancelled"):
        runs.add_metric([state], snap.runs_counts.get(state, 0))
    inflight = _gauge("mesh_runs_in_flight", "Runs started and not yet ended.")
    inflight.add_metric([], snap.runs_in_flight)
    overdue = _gauge("mesh_runs_overdue", "Runs in flight past their re-drive deadline "
                     "(no progress: stuck), by workflow.", ["workflow"])
    for wf, n in sorted(snap.runs_overdue.items()):
        overdue.add_metric([wf], n)
    for wf in (w.name for w in snap.workflows):
        if wf not in snap.runs_overdue:
            overdue.add_metric([wf], 0)
    redriven = CounterMetricFamily("mesh_runs_redriven", "Runs re-sent by the re-driver "
                                   "(their messages were lost or their worker died).")
    redriven.add_metric([], snap.runs_counts.get("redriven", 0))
    yield from (runs, inflight, overdue, redriven)


def _gpu_families(snap: Snapshot) -> Iterator[Any]:
    held = _gauge("mesh_gpu_held_items", "Bulk GPU items held for the off-peak window.",
                  ["queue"])
    for q in GPU_QUEUES:
        held.add_metric([q], snap.gpu_held.get(q, 0))
    yield held
    if snap.gpu_held_oldest is not None:
        g = _gauge("mesh_gpu_held_oldest_timestamp_seconds", "Submission time of the oldest held item.")
        g.add_metric([], snap.gpu_held_oldest)
        yield g
    rel = CounterMetricFamily("mesh_gpu_released", "Held items released, by why (window, "
                              "deadline, manual).", labels=["why"])
    for why in sorted(set(snap.gpu_released) | {"window", "deadline", "manual"}):
        rel.add_metric([why], snap.gpu_released.get(why, 0))
    yield rel
    cost = CounterMetricFamily("mesh_gpu_recorded_seconds", "GPU-seconds recorded by the GPU "
                               "pool, by task type, price period and whether deferred.",
                               labels=["task_type", "period", "mode"])
    for (task_type, period, mode), v in sorted(snap.gpu_seconds.items()):
        cost.add_metric([task_type, period, mode], v)
    yield cost
    if snap.offpeak_open is not None:
        g = _gauge("mesh_gpu_offpeak_open", "1 while an off-peak window is open.")
        g.add_metric([], 1 if snap.offpeak_open else 0)
        yield g
    if snap.offpeak_next is not None:
        g = _gauge("mesh_gpu_offpeak_next_start_timestamp_seconds",
                   "Start of the next off-peak window (now, while one is open).")
        g.add_metric([], snap.offpeak_next)
        yield g
    if snap.offpeak_end is not None:
        g = _gauge("mesh_gpu_offpeak_end_timestamp_seconds", "End of the open off-peak window.")
        g.add_metric([], snap.offpeak_end)
        yield g
