"""`mesh results get|made-by`: stored results with their lineage, both ways.

Every record a workflow writes carries its lineage (event id, run id, workflow and
version, step, model or prompt version); the run ledger adds, per run, what each step
wrote. ``get`` reads a result and walks back to its cause; ``made-by`` starts from a
model version and lists what its runs wrote.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings
from worker_mesh.workers.cli.runs_cmd import history_and_ledger, when

KINDS = ("churn", "embedding", "content")
LINEAGE = ("event_id", "run_id", "workflow", "workflow_version", "step", "model_version")


def read_result(kind: str, entity: str) -> list[dict[str, Any]]:
    """The stored records of ``entity`` (one per model version for embeddings)."""
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client

    s = load_settings()
    client = make_client(s.redis)
    keys = Keys(s.redis.key_prefix)
    if kind == "churn":
        from worker_mesh.workers.stores.results import ChurnResults

        row = ChurnResults(client, keys).get(entity)
        return [row] if row else []
    if kind == "embedding":
        from worker_mesh.workers.embedding.vectors import VectorStore

        store = VectorStore(client, keys)
        out = []
        for model in store.models():
            doc = store.get(model, entity)
            if doc is not None:
                out.append({"content_id": entity, **doc.meta, "chunks": len(doc.hashes)})
        return out
    raw: Any = client.get(keys.result("content", entity))
    if not raw:
        return []
    doc = json.loads(raw)
    return [{k: v for k, v in doc.items() if k != "body"} | {"body_chars": len(doc.get("body", ""))}]


def lineage_of(row: dict[str, Any], kind: str, entity: str) -> dict[str, Any]:
    """event -> run -> workflow@version -> step -> model version -> record, with what
    the run ledger still knows of the run (its cause event, state, the step's write)."""
    hist, _ = history_and_ledger()
    out: dict[str, Any] = {k: row.get(k, "") for k in LINEAGE} | {"record": f"{kind}:{entity}"}
    run = hist.show(str(row.get("run_id", ""))) if row.get("run_id") else None
    if run is None:
        out["run"] = None  # older than runs.retention_s: the record keeps its own lineage
        return out
    out["run"] = {"state": run.summary.state, "started_at": run.summary.started_at,
                  "cause_type": run.cause.get("type", run.summary.event_type),
                  "cause_ts": run.cause.get("ts", ""), "cause_producer": run.cause.get("producer", "")}
    if not out["step"]:
        out["step"] = next((st.step for st in run.steps if f"{kind}:{entity}" in st.wrote), "")
    return out


@click.group("results")
def results_group() -> None:
    """Stored results (churn scores, embeddings, generated content) and their lineage."""


@results_group.command("get")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("entity")
@json_option
def get_cmd(kind: str, entity: str, as_json: bool) -> None:
    """Print ENTITY's stored KIND result with its lineage: the event that caused it, the
    run, the workflow and version, the step, the model version. ENTITY is the id
    (customer id, content id). Exits 1 when nothing is stored."""
    rows = read_result(kind, entity)
    if not rows:
        click.echo(f"no {kind} result for {entity}", err=True)
        sys.exit(1)
    docs = [{"result": row, "lineage": lineage_of(row, kind, entity)} for row in rows]
    if as_json:
        emit_json(docs if kind == "embedding" else docs[0])
        return
    for d in docs:
        r, lin = d["result"], d["lineage"]
        shown = {k: v for k, v in r.items() if k not in LINEAGE and k != "extra"}
        click.echo(f"{kind} {entity}: " + "  ".join(f"{k}={v}" for k, v in shown.items()))
        run = lin["run"] or {}
        cause = (f"{run.get('cause_type', '?')} at {run.get('cause_ts', '?')} by "
                 f"{run.get('cause_producer', '?')}") if run else "(run past its retention)"
        click.echo(f"  made by: event {lin['event_id'] or '-'} {cause}")
        click.echo(f"        -> run {lin['run_id'] or '-'} ({lin['workflow']}@{lin['workflow_version']}"
                   f"{', ' + run['state'] if run else ''})")
        click.echo(f"        -> step {lin['step'] or '-'} -> model {lin['model_version'] or '-'}"
                   f" -> {lin['record']}")


@results_group.command("made-by")
@click.argument("model_version")
@click.option("--workflow", "-w", default=None, help="Only runs of this workflow.")
@click.option("--limit", default=1000, show_default=True, help="At most this many runs.")
@json_option
def made_by_cmd(model_version: str, workflow: str | None, limit: int, as_json: bool) -> None:
    """What MODEL_VERSION made: the runs whose steps used it (newest first) and the
    records each wrote (runs within MESH_RUNS_RETENTION_S). Every record also names
    its model version itself (`mesh results get`)."""
    from worker_mesh.mesh.runs_history import RunQuery

    hist, _ = history_and_ledger()
    out = []
    for s in hist.query(RunQuery(model_version=model_version, workflow=workflow), limit=limit):
        d = hist.show(s.run_id)
        wrote = [w for st in (d.steps if d else []) for w in st.wrote.split() if st.wrote]
        out.append({"run_id": s.run_id, "workflow": s.workflow, "state": s.state,
                    "entity": s.entity, "started_at": s.started_at, "wrote": wrote})
    if as_json:
        emit_json(out)
        return
    if not out:
        click.echo(f"no run used {model_version} (within the retention)")
    for row in out:
        click.echo(f"{when(row['started_at'])}  {row['run_id']}  {row['workflow']:12} "
                   f"{row['state']:9} {' '.join(row['wrote']) or '-'}")


COMMANDS = [results_group]
