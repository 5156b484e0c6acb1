"""`mesh runs list|show|cancel`: the run history of the run ledger (``mesh.runs_history``)."""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None, *, now: float | None = None) -> float | None:
    """``2h`` / ``30m`` / ``7d`` ago, an ISO 8601 time (UTC when it has no zone) or Unix
    seconds, as Unix seconds."""
    if text is None:
        return None
    now = time.time() if now is None else now
    m = _AGO.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time: give 2h, 30m, 7d (ago), an ISO 8601 "
                                 "time or Unix seconds") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def history_and_ledger() -> tuple[Any, Any]:
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client
    from worker_mesh.mesh.runs import RunLedger
    from worker_mesh.mesh.runs_history import RunHistory

    s = load_settings()
    client = make_client(s.redis)
    keys = Keys(s.redis.key_prefix)
    return RunHistory(client, keys, s.runs), RunLedger(client, keys, s.runs)


def query_options(fn: Any) -> Any:
    """The run filters shared by `mesh runs list` and `mesh replay`."""
    from worker_mesh.mesh.runs_history import STATES

    for opt in reversed([
        click.option("--workflow", "-w", default=None, help="Runs of this workflow."),
        click.option("--workflow-version", default=None, help="...of this workflow version."),
        click.option("--state", type=click.Choice(STATES), default=None, help="Runs in this state."),
        click.option("--entity", default=None, help="Runs for this entity key (customer:42)."),
        click.option("--model-version", default=None,
                     help="Runs whose steps used this model (or prompt) version."),
        click.option("--failed-at", default=None, help="Runs that failed at this step."),
        click.option("--since", default=None, help="Started at or after: 2h, 7d (ago), ISO 8601, Unix s."),
        click.option("--until", default=None, help="Started at or before (same forms)."),
    ]):
        fn = opt(fn)
    return fn


def build_query(workflow: str | None, workflow_version: str | None, state: str | None,
                entity: str | None, model_version: str | None, failed_at: str | None,
                since: str | None, until: str | None) -> Any:
    from worker_mesh.mesh.runs_history import RunQuery

    if workflow_version is not None and workflow is None:
        raise click.UsageError("--workflow-version needs --workflow")
    return RunQuery(workflow=workflow, version=workflow_version, state=state, entity=entity,
                    model_version=model_version, failed_step=failed_at,
                    since=parse_time(since), until=parse_time(until))


@click.group("runs")
def runs_group() -> None:
    """Workflow runs: list and filter them, show one step by step, cancel one.

    Runs are kept for MESH_RUNS_RETENTION_S (7 days by default) after they end."""


@runs_group.command("list")
@query_options
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@json_option
def list_cmd(workflow: str | None, workflow_version: str | None, state: str | None,
             entity: str | None, model_version: str | None, failed_at: str | None,
             since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first. Filters combine (AND); each reads an index, not every run."""
    q = build_query(workflow, workflow_version, state, entity, model_version, failed_at, since, until)
    hist, _ = history_and_ledger()
    rows = hist.query(q, limit=limit)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    if not rows:
        click.echo("no run matches")
        return
    click.echo(f"{'run':36}  {'workflow':18} {'state':9} {'started (UTC)':19}  {'took':>8}  "
               f"{'entity':20} model / failed at")
    for r in rows:
        took = f"{r.duration_s:.2f}s" if r.duration_s is not None else "-"
        tail = r.model_version or ""
        if r.failed_step:
            tail += f" failed at {r.failed_step}"
        click.echo(f"{r.run_id:36}  {(r.workflow + '@' + r.version)[:18]:18} {r.state:9} "
                   f"{when(r.started_at):19}  {took:>8}  {r.entity[:20]:20} {tail}")


@runs_group.command("show")
@click.argument("run_id")
@json_option
def show_cmd(run_id: str, as_json: bool) -> None:
    """One run: the event that caused it, then each step with its state, attempts,
    timings, last error and what it wrote. Exits 1 when the run is unknown (never
    started, or past its retention)."""
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.events.sensitive import mask_wire

    hist, _ = history_and_ledger()
    load_workflows(load_settings())
    d = hist.show(run_id)
    if d is None:
        click.echo(f"no run {run_id} (unknown, or older than runs.retention_s)", err=True)
        sys.exit(1)
    doc = d.as_dict() | {"cause": mask_wire(d.cause)}
    if as_json:
        emit_json(doc)
        return
    s = d.summary
    click.echo(f"run {s.run_id}: {s.workflow}@{s.version} {s.state.upper()}")
    took = f" (took {s.duration_s:.3f}s)" if s.duration_s is not None else ""
    click.echo(f"  started {when(s.started_at)}  finished {when(s.finished_at)}{took}")
    click.echo(f"  entity {s.entity or '-'}  model version {s.model_version or '-'}")
    if s.reason:
        click.echo(f"  reason: {s.reason[:500]}")
    for k, v in d.extra.items():
        click.echo(f"  {k}: {v[:200]}")
    c = doc["cause"]
    click.echo(f"cause: event {c.get('id', s.event_id)} {c.get('type', s.event_type)} "
               f"key={c.get('key', '-')} at {c.get('ts', '-')} by {c.get('producer', '-')}")
    if c.get("payload"):
        click.echo(f"  payload {c['payload'][:300]}")
    click.echo("steps:")
    for st in d.steps:
        at = f"+{st.first_start - s.started_at:.3f}s" if st.first_start is not None else "-"
        took = f"{st.duration_s:.3f}s" if st.duration_s is not None else "-"
        click.echo(f"  {st.step:16} {st.state:10} attempts {st.attempts}  started {at:>9}  "
                   f"took {took:>8}  {st.task}")
        if st.error:
            click.echo(f"  {'':16} error: {st.error[:300]}")
        if st.wrote:
            click.echo(f"  {'':16} wrote: {st.wrote[:300]}")


@runs_group.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="cancelled by an operator", show_default=True)
@json_option
def cancel_cmd(run_id: str, reason: str, as_json: bool) -> None:
    """Cancel a run in flight: the step running now finishes (or fails) on its own,
    no later step starts, the run ends `cancelled`. Exits 1 when the run is not in
    flight (unknown, or already ended: its state is printed)."""
    from worker_mesh.monitoring import metrics

    _, ledger = history_and_ledger()
    done = ledger.cancel(run_id, reason)
    state = ledger.get_field(run_id, "state")
    if done:
        metrics.workflow_run(ledger.get_field(run_id, "workflow") or "none", "cancelled")
    if as_json:
        emit_json({"run_id": run_id, "cancelled": done, "state": state})
    elif done:
        click.echo(f"cancelled run {run_id}")
    else:
        click.echo(f"run {run_id} is not in flight (state: {state or 'unknown'})", err=True)
    if not done:
        sys.exit(1)


COMMANDS = [runs_group]
