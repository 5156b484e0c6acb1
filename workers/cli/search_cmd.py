"""`mesh search "text"`: the nearest content by embedding, so a user can see what the
re-embedding workflow produced; `mesh reembed-all`: queue the model-upgrade re-embed."""

from __future__ import annotations

import uuid

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


@click.command("search")
@click.argument("text")
@click.option("--k", "k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many chunks to return.")
@json_option
def search_cmd(text: str, k: int, as_json: bool) -> None:
    """Print the K chunks nearest to TEXT (content id, chunk, cosine score, snippet),
    searched among vectors of the current embedding model version."""
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client
    from worker_mesh.workers.embedding.model import load_model
    from worker_mesh.workers.embedding.pipeline import search

    s = load_settings()
    client = make_client(s.redis)
    model = load_model(s.gpu)
    hits = search(client, Keys(s.redis.key_prefix), model, text, k)
    if as_json:
        emit_json({"query": text, "model_version": model.version,
                   "hits": [h.as_dict() for h in hits]})
        return
    if not hits:
        click.echo(f"no content embedded with {model.version} yet")
        return
    click.echo(f"{'score':>6}  {'content':<24} {'chunk':>5}  snippet")
    for h in hits:
        click.echo(f"{h.score:6.3f}  {h.content_id[:24]:<24} {h.chunk:>5}  {h.snippet}")


@click.command("reembed-all")
@json_option
def reembed_all_cmd(as_json: bool) -> None:
    """Queue the re-embedding of every document with the current model version (after
    a model upgrade). Bulk GPU work: it goes to the gpu-batch queue (off-peak)."""
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.workers.app import create_app

    s = load_settings()
    load_workflows(s)
    app = create_app(s)
    run_id = uuid.uuid4().hex
    meta = {"run_id": run_id, "workflow": "reembed-all", "workflow_version": "1"}
    res = app.signature("mesh.embedding.reembed_all", args=(meta,),
                        task_id=f"{run_id}:reembed_all").apply_async()
    if as_json:
        emit_json({"task_id": res.id, "run_id": run_id})
    else:
        click.echo(f"queued re-embed-all as task {res.id}")


COMMANDS = [search_cmd, reembed_all_cmd]
