"""What is wrong with the mesh, and what to do: ``mesh status``'s verdicts, judged from
one ``Snapshot``.

Each verdict mirrors an alert rule (``monitoring/prometheus/alerts.yml``) judged on a
single read instead of a time series, so a shell without Prometheus sees the same
problems an on-call is paged for, each with the one line to act on. A verdict names
its problem with a stable code (``--json`` readers match on it), the thing it is about
(a queue, a workflow, a reason/type pair), what is wrong and a hint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from worker_mesh.monitoring.snapshot import Snapshot

DLQ_RECENT_S = 900
"""A dead letter this recent means the stream is growing (``MeshDeadLetterGrowing``)."""
WINDOW_CLOSING_S = 1800
"""Bulk GPU work left this close to the window's end is at risk (``MeshGpuBacklogWillMissWindow``)."""
ALWAYS_SERVED = ("cpu", "io")
"""Queues every workflow needs: no worker is a problem even while they are empty."""

PROBLEMS = ("no_dispatcher", "unserved_queue", "dead_letters_growing", "stale_workflow",
            "failing_workflow", "stuck_runs", "gpu_backlog_at_risk")


@dataclass(frozen=True)
class Verdict:
    problem: str
    """One of ``PROBLEMS``."""
    subject: str
    message: str
    hint: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(snap: Snapshot) -> list[Verdict]:
    """Every problem visible in ``snap``, most fundamental first (a dead dispatcher
    explains stale workflows, so it is listed before them)."""
    return [*_dispatchers(snap), *_queues(snap), *_dead_letters(snap), *_workflows(snap),
            *_stuck(snap), *_gpu(snap)]


def _dispatchers(snap: Snapshot) -> list[Verdict]:
    if snap.dispatchers_alive > 0:
        return []
    dead = f" ({snap.dispatchers_known} stopped sending heartbeats)" if snap.dispatchers_known else ""
    return [Verdict("no_dispatcher", "dispatcher", f"no dispatcher is alive{dead}: published "
                    "events start no workflow",
                    "start `mesh dispatcher` (or restart its Deployment) and read its last log "
                    "lines; events published meanwhile wait in the streams")]


def _queues(snap: Snapshot) -> list[Verdict]:
    out = []
    for q in sorted(snap.queues):
        if snap.workers.get(q, 0) > 0:
            continue
        work = snap.queues.get(q, 0) + snap.reserved.get(q, 0)
        if work:
            gpu = q.startswith("gpu")
            hint = ("check the GPU pool: KEDA ScaledObject, pending pods, GPU nodes" if gpu else
                    f"start `mesh worker -Q {q}` (or check its Deployment: crash loops, OOM)")
            out.append(Verdict("unserved_queue", q, f"{work} task(s) wait in {q} and no worker "
                               "serves it", hint))
        elif q in ALWAYS_SERVED:
            out.append(Verdict("unserved_queue", q, f"no worker serves {q}; every workflow "
                               "has steps there", f"start `mesh worker -Q {q}`"))
    return out


def _dead_letters(snap: Snapshot) -> list[Verdict]:
    out = []
    for (reason, etype), (n, last) in sorted(snap.dlq_by.items()):
        age = snap.taken_at - last
        if age <= DLQ_RECENT_S:
            out.append(Verdict("dead_letters_growing", f"{reason}/{etype}",
                               f"{etype} events dead-lettered for reason {reason}, the latest "
                               f"{age:.0f} s ago ({n} in all)",
                               "`mesh dlq list` shows each reason; fix the producer or the "
                               "workflow, then `mesh dlq replay`"))
    return out


def _workflows(snap: Snapshot) -> list[Verdict]:
    out = []
    for w in snap.workflows:
        if w.failing:
            out.append(Verdict("failing_workflow", w.name, f"the last {w.failures_since_success} "
                               f"{w.name} runs failed with no success in between",
                               f"`mesh dlq list` has each failed run's last error; Sentry "
                               f"workflow:{w.name}; fix, then `mesh dlq replay`"))
        if not w.within_sla(snap.taken_at):
            age = w.age_s(snap.taken_at)
            since = "never succeeded" if age is None else f"last success {age:.0f} s ago"
            out.append(Verdict("stale_workflow", w.name, f"{w.name} is out of its {w.sla_s} s "
                               f"SLA ({since})",
                               "fix what else is listed here; if nothing is, check that its "
                               "trigger events are still published"))
    return out


def _stuck(snap: Snapshot) -> list[Verdict]:
    if not snap.stuck:
        return []
    by_wf: dict[str, list[str]] = {}
    for run in snap.stuck:
        by_wf.setdefault(run.workflow, []).append(run.run_id)
    return [Verdict("stuck_runs", wf, f"{len(ids)} {wf} run(s) past their re-drive deadline: "
                    f"{', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}",
                    "look at each run's unfinished step and the worker that should run it")
            for wf, ids in sorted(by_wf.items())]


def _gpu(snap: Snapshot) -> list[Verdict]:
    backlog = sum(snap.gpu_held.values()) + snap.queues.get("gpu-batch", 0)
    if not backlog or not snap.offpeak_open:
        return []
    if snap.workers.get("gpu-batch", 0) == 0:
        if snap.queues.get("gpu-batch", 0) + snap.reserved.get("gpu-batch", 0):
            return []  # said by unserved_queue already
        return [Verdict("gpu_backlog_at_risk", "gpu-batch", f"{backlog} bulk GPU item(s) wait, "
                        "the off-peak window is open and no gpu-batch worker runs",
                        "check that the GPU pool scaled up (KEDA cron pre-warm, GPU nodes)")]
    if snap.offpeak_end is not None and snap.offpeak_end - snap.taken_at < WINDOW_CLOSING_S:
        left = (snap.offpeak_end - snap.taken_at) / 60
        return [Verdict("gpu_backlog_at_risk", "gpu-batch", f"{backlog} bulk GPU item(s) left "
                        f"and the window closes in {left:.0f} min",
                        "scale the gpu-batch pool up now or widen MESH_GPU_OFFPEAK_WINDOWS")]
    return []
