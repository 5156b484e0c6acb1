"""`mesh replay`: re-run a workflow for a query of runs, or backfill it over recorded
events, as events through the dispatcher (``events.replay``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings
from worker_mesh.workers.cli.runs_cmd import parse_time

WHERE_KEYS = ("model_version", "workflow_version", "state", "entity", "failed_at")


def parse_where(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        k = k.strip().replace("-", "_")
        if not sep or k not in WHERE_KEYS or not v:
            raise click.BadParameter(f"{item!r}: give KEY=VALUE with KEY one of "
                                     f"{', '.join(WHERE_KEYS)}", param_hint="--where")
        out[k] = v.strip()
    return out


def _entities(given: tuple[str, ...], path: Path | None) -> list[str | None]:
    ents: list[str] = list(given)
    if path is not None:
        ents += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(ents)) or [None]


def _plan(rp: Any, workflow: str, where: dict[str, str], entities: list[str | None],
          since: float | None, until: float | None, backfill: bool, latest: bool) -> Any:
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.events.replay import ReplayPlan
    from worker_mesh.mesh.runs_history import RunQuery

    registry = load_workflows(load_settings())
    if workflow not in registry.workflows:
        raise click.BadParameter(f"unknown workflow {workflow!r} (known: "
                                 f"{', '.join(sorted(registry.workflows))})", param_hint="--workflow")
    if backfill:
        if where or entities != [None]:
            raise click.UsageError("--backfill replays every recorded event of the time range: "
                                   "no --where / --entity")
        now = time.time()
        return rp.from_streams(workflow, registry, int((since or 0) * 1000), int((until or now) * 1000))
    plan = ReplayPlan(workflow)
    for ent in entities:
        q = RunQuery(workflow=workflow, version=where.get("workflow_version"), state=where.get("state"),
                     entity=ent or where.get("entity"), model_version=where.get("model_version"),
                     failed_step=where.get("failed_at"), since=since, until=until)
        part = rp.from_runs(workflow, q, latest_per_entity=latest)
        plan.events += part.events
        plan.runs += part.runs
        plan.missing += part.missing
    return plan


def _send(rp: Any, plan: Any, rate: float, chunk: int, max_backlog: int, quiet: bool) -> int:
    """Send the plan in chunks, at most ``rate`` events/s, waiting while the dispatchers'
    backlog is above ``max_backlog``; a rich progress bar unless ``quiet``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    rp.grant(plan)
    sent = 0
    with Progress(TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=quiet, transient=False) as bar:
        job = bar.add_task(plan.workflow, total=plan.count)
        start = time.monotonic()
        for i in range(0, plan.count, chunk):
            while max_backlog and rp.backlog() > max_backlog:
                time.sleep(0.2)  # live traffic first
            part = plan.events[i:i + chunk]
            rp.send(plan, part)
            sent += len(part)
            bar.update(job, advance=len(part))
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return sent


@click.command("replay")
@click.option("--workflow", "-w", required=True, help="The workflow to re-run (only that one).")
@click.option("--where", "where_", multiple=True, metavar="KEY=VALUE",
              help=f"Select runs: {', '.join(WHERE_KEYS)} (repeatable, combined with AND).")
@click.option("--entity", "entities", multiple=True, help="An entity key (repeatable): its runs.")
@click.option("--entities-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A file of entity keys, one a line.")
@click.option("--since", default=None, help="Runs (or, with --backfill, events) from: 2h, 7d ago, ISO 8601.")
@click.option("--until", default=None, help="...up to (same forms).")
@click.option("--backfill", is_flag=True,
              help="Select recorded events in the streams (--since/--until) that route to the "
                   "workflow, instead of runs.")
@click.option("--latest-per-entity", is_flag=True, help="Only the newest matching run of each entity.")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before sending.")
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(min=0.1),
              help="At most this many events per second.")
@click.option("--max-backlog", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Pause while the dispatchers have more entries than this to do (0: never).")
@json_option
def replay_cmd(workflow: str, where_: tuple[str, ...], entities: tuple[str, ...],
               entities_file: Path | None, since: str | None, until: str | None, backfill: bool,
               latest_per_entity: bool, dry_run: bool, yes: bool, rate: float, max_backlog: int,
               as_json: bool) -> None:
    """Re-run WORKFLOW for a selection of its runs, as new events through the dispatcher:
    each selected run's cause event is published again with a replay grant, so dedupe,
    coalescing, the run ledger and `mesh audit` all apply, and only WORKFLOW runs. A new
    attempt: new run ids; nothing is resumed. Runs of the same event count once.

    \b
    mesh replay -w reembed --where model_version=all-MiniLM-L6-v2@53aa51172d14 --dry-run
    mesh replay -w churn --where state=failed --where failed_at=score --since 12h -y
    mesh replay -w reembed --backfill --since 2026-11-01 --until 2026-11-02 -y

    Counts first (--dry-run stops there), asks unless --yes, then sends at most --rate
    events/s while the dispatchers keep up (--max-backlog)."""
    from worker_mesh.events.replay import Replayer
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client

    s = load_settings()
    rp = Replayer(make_client(s.redis), s, Keys(s.redis.key_prefix))
    plan = _plan(rp, workflow, parse_where(where_), _entities(entities, entities_file),
                 parse_time(since), parse_time(until), backfill, latest_per_entity)
    doc = plan.as_dict() | {"dry_run": dry_run, "sent": 0}
    if not as_json:
        what = "recorded events" if backfill else f"runs matched: {plan.runs}"
        click.echo(f"{plan.count} event(s) to replay through {workflow} ({what})")
        if plan.missing:
            click.echo(f"{len(plan.missing)} run(s) have no recorded cause event (skipped)")
    if dry_run or plan.count == 0:
        if as_json:
            emit_json(doc)
        return
    if not yes and not click.confirm(f"replay {plan.count} event(s)?", default=False):
        click.echo("nothing sent")
        sys.exit(1)
    doc["sent"] = _send(rp, plan, rate, chunk=max(1, min(100, int(rate))), max_backlog=max_backlog,
                        quiet=as_json)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"sent {doc['sent']} event(s) as replay {plan.replay_id}; follow them with "
                   f"`mesh runs list --workflow {workflow}` and `mesh audit`")


COMMANDS = [replay_cmd]
