"""`mesh dispatcher`, `mesh audit`, `mesh dlq list|replay`, `mesh events schema`."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from worker_mesh.workers.cli._common import echo, emit_json, json_option, load_settings


@click.command("dispatcher")
@click.option("--consumer", default=None,
              help="Consumer name in the group (default: dispatcher.consumer or <host>-<pid>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def dispatcher_cmd(consumer: str | None, loglevel: str) -> None:
    """Turn stream entries into workflow runs (run as many as you like: they share
    the work as members of one consumer group).

    Per entry: validate -> dedupe -> route -> coalesce? -> start the Celery canvas ->
    record the outcome and XACK. Invalid entries go to the dead-letter stream at once;
    entries left pending by a dead dispatcher are reclaimed after
    MESH_DISPATCHER_CLAIM_IDLE_MS. SIGTERM finishes the batch in hand, acks, exits 0.
    """
    s = load_settings()  # Redis checked first: exit 3 with the reason, not retry forever
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.chains.starter import CeleryStarter
    from worker_mesh.events.dispatcher import Dispatcher
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client
    from worker_mesh.workers.app import create_app

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = load_workflows(s)
    app = create_app(s)
    d = Dispatcher(make_client(s.redis), s, Keys(s.redis.key_prefix), registry,
                   CeleryStarter(app, registry, max_payload_bytes=s.streams.max_payload_bytes),
                   consumer=consumer)
    d.install_signals()
    logging.getLogger("mesh.dispatcher").info(
        "dispatcher %s: %d partition(s), workflows: %s", d.consumer, d.partitions,
        ", ".join(sorted(registry.workflows)) or "(none)")
    n = d.run()
    logging.getLogger("mesh.dispatcher").info("dispatcher %s stopped after %d entries", d.consumer, n)


@click.command("audit")
@json_option
@click.option("--wait-s", default=0.0, show_default=True,
              help="Wait up to this long for in-flight entries and runs to settle before judging.")
@click.option("--streams-only", is_flag=True,
              help="Reconcile the event streams only (the dispatcher's part), not the runs.")
def audit_cmd(as_json: bool, wait_s: float, streams_only: bool) -> None:
    """Reconcile events -> runs -> run outcomes.

    Streams: published = XINFO STREAM entries-added; accounted = sum of recorded
    outcomes (started, deduplicated, coalesced, unrouted, dead_lettered); in flight =
    pending + lag of the dispatchers' consumer group. Runs (the run ledger): started =
    succeeded + failed + cancelled + in flight; runs in flight are listed with their age
    and last finished step. Exits 1 when a stream or the ledger does not add up (an
    entry or a run was lost or counted twice), when a run is overdue (no progress past
    its re-drive deadline: neither finished nor legitimately in flight), or when
    --wait-s was given and entries or runs are still in flight at the end; 3 when Redis cannot be read
    (unreachable, refused credentials, untrusted certificate), 2 for bad settings.
    """
    from worker_mesh.events.audit import audit, audit_runs
    from worker_mesh.mesh.redis_conn import make_client

    s = load_settings()
    client = make_client(s.redis)
    deadline = time.monotonic() + wait_s
    while True:
        rows = audit(client, s)
        runs = audit_runs(client, s)
        runs_settled = streams_only or runs.settled
        if (all(r.settled for r in rows) and runs_settled) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    ok = (all(r.consistent for r in rows) and (streams_only or runs.ok)
          and (wait_s <= 0 or (all(r.settled for r in rows) and runs_settled)))
    if as_json:
        emit_json({"ok": ok, "streams": [r.as_dict() for r in rows], "runs": runs.as_dict()})
    else:
        for r in rows:
            state = "ok" if r.consistent else "MISMATCH"
            click.echo(f"{r.stream}: published={r.published} accounted={r.accounted} "
                       f"in_flight={r.in_flight} (pending={r.pending} lag={r.lag}) {state}")
            for name, n in sorted(r.outcomes.items()):
                click.echo(f"    {name:<14} {n}")
        state = "ok" if runs.ok else ("MISMATCH" if not runs.consistent else "OVERDUE")
        click.echo(f"runs: started={runs.started} succeeded={runs.succeeded} failed={runs.failed} "
                   f"cancelled={runs.cancelled} in_flight={runs.in_flight} overdue={runs.overdue} "
                   f"re-driven={runs.redriven} {state}")
        for row in runs.oldest:
            click.echo(f"    {row['run_id']} {row['workflow']:<16} age {row['age_s']:>8.1f}s "
                       f"last step {row['last_finished_step'] or '-':<10} due in {row['due_in_s']:.0f}s")
    if not ok:
        sys.exit(1)


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and replay the dead-letter stream (events that could not run)."""


def _dead_letters():  # type: ignore[no-untyped-def]
    from worker_mesh.events.dlq import DeadLetters
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client

    s = load_settings()
    return DeadLetters(make_client(s.redis), Keys(s.redis.key_prefix), s.streams)


@dlq_group.command("list")
@json_option
@click.option("--type", "type_name", default=None, help="Only events of this type.")
@click.option("--limit", default=100, show_default=True, help="At most this many, oldest first.")
def dlq_list(as_json: bool, type_name: str | None, limit: int) -> None:
    """List dead-lettered events with their reason, oldest first."""
    items = _dead_letters().list(limit=limit, type_name=type_name)
    if as_json:
        emit_json([d.as_dict() for d in items])
        return
    if not items:
        click.echo("the dead-letter stream is empty")
    for d in items:
        echo(f"{d.id}  {d.reason_code:<15} {d.type or '-':<24} {d.reason[:160]}")
        if d.error:
            echo(f"{'':<17}error: {d.error[:200]}")


@dlq_group.command("replay")
@click.option("--id", "ids", multiple=True, help="A dead-letter entry id (repeatable).")
@click.option("--type", "type_name", default=None, help="Every dead-lettered event of this type.")
@click.option("--all", "all_", is_flag=True, help="Every dead-lettered event.")
@click.option("--from-start", is_flag=True,
              help="Re-run every step of a failed run (default: resume at the failed step; "
                   "steps that succeeded return their stored results).")
@json_option
def dlq_replay(ids: tuple[str, ...], type_name: str | None, all_: bool, from_start: bool,
               as_json: bool) -> None:
    """Re-inject dead-lettered events into their event stream (after a fix) and remove
    them from the dead-letter stream. A replay is a new attempt: it is not taken for a
    duplicate, and its runs get new run ids. A dead letter that names the workflow
    that failed (workflow_failed, stuck, build_failed) re-runs only that workflow, and
    resumes the failed run at the step that failed: the steps that had succeeded are
    not executed again (no second paid API call) unless --from-start.
    Give exactly one of --id, --type, --all. Exits 1 when an --id was not found."""
    if sum((bool(ids), type_name is not None, all_)) != 1:
        raise click.UsageError("give exactly one of --id (repeatable), --type or --all")
    res = _dead_letters().replay(list(ids) if ids else None, type_name=type_name, all_=all_,
                                 from_start=from_start)
    if as_json:
        emit_json({"replayed": res.replayed, "missing": res.missing})
    else:
        click.echo(f"replayed {res.count} event(s)")
        for m in res.missing:
            click.echo(f"not in the dead-letter stream: {m}")
    if ids and res.missing:
        sys.exit(1)


@click.group("events")
def events_group() -> None:
    """Event types and their wire format."""


@events_group.command("schema")
@click.option("--type", "type_name", default=None, help="Only this event type (e.g. customer.updated).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write to this file.")
def events_schema(type_name: str | None, out: Path | None) -> None:
    """Print the JSON Schema of every event payload (keyed by type@version), with
    the envelope's field names; see README for the wire format."""
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.events.wire import schema

    load_workflows(load_settings(check_redis=False))  # a team's event types too (its modules)
    doc: dict[str, Any] = schema()
    if type_name is not None:
        events = {k: v for k, v in doc["events"].items() if k.split("@", 1)[0] == type_name}
        if not events:
            raise click.BadParameter(f"unknown event type {type_name!r}", param_hint="--type")
        doc = {**doc, "events": events}
    text = json.dumps(doc, indent=2, sort_keys=True)
    if out is not None:
        out.write_text(text + "\n")
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text)


COMMANDS = [dispatcher_cmd, audit_cmd, dlq_group, events_group]
