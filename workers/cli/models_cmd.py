"""`mesh train` and `mesh models list|promote|rescore|history`: the churn model's lifecycle
from the command line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


def _runtime(with_app: bool = False) -> Any:
    from worker_mesh.workers.runtime import Runtime

    settings = load_settings()
    app = None
    if with_app:
        from worker_mesh.chains.loader import load_workflows
        from worker_mesh.workers.app import create_app

        load_workflows(settings)
        app = create_app(settings)
    return Runtime(settings, app)


def _registry(rt: Any) -> Any:
    from worker_mesh.workers.churn.scoring import services

    return services(rt).registry


@click.command("train")
@click.option("--samples", type=click.IntRange(200, 1_000_000), default=None,
              help="Synthetic customers to generate (default: workflows.retrain_samples).")
@click.option("--seed", type=int, default=None, help="Data seed (default: random).")
@json_option
def train_cmd(samples: int | None, seed: int | None, as_json: bool) -> None:
    """Train a churn model on synthetic customers and print its held-out ROC AUC.

    The candidate is stored (content-hashed) with its metrics and promoted if no model
    is promoted yet or it is not worse than the promoted one on the same held-out set.
    """
    from worker_mesh.workers.churn.training import train_and_maybe_promote

    rt = _runtime()
    wf = rt.settings.workflows
    seed = seed if seed is not None else uuid.uuid4().int & 0x7FFFFFFF
    out = train_and_maybe_promote(
        _registry(rt), samples=samples or wf.retrain_samples, seed=seed,
        holdout_fraction=wf.retrain_holdout_fraction, max_auc_drop=wf.retrain_max_auc_drop,
        reason="mesh train", provenance={"producer": "cli"})
    if as_json:
        emit_json(out.as_dict())
        return
    click.echo(f"candidate {out.candidate_version}: ROC AUC {out.candidate_metrics['roc_auc']:.4f} "
               f"on {out.candidate_metrics['n']} held-out customers "
               f"(trained on {out.samples - out.candidate_metrics['n']}, {out.seconds:.1f}s)")
    if out.current_version:
        cur = (out.current_metrics or {}).get("roc_auc")
        click.echo(f"current   {out.current_version}: ROC AUC "
                   f"{cur:.4f}" if cur is not None else f"current   {out.current_version}: not evaluable")
    click.echo(("promoted: " if out.promoted else "kept the current model: ") + out.reason)


@click.group("models")
def models_group() -> None:
    """Churn model versions: list them, promote (or roll back to) one, rescore."""


@models_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Registered versions with their held-out metrics; * marks the promoted one."""
    rt = _runtime()
    reg = _registry(rt)
    versions = reg.versions()
    ptr = reg.promoted()
    if as_json:
        emit_json({"model": reg.name, "promoted": ptr.version if ptr else None,
                   "seq": ptr.seq if ptr else None, "versions": versions})
        return
    if not versions:
        click.echo("no churn model yet: run `mesh train`")
        return
    # roc_auc: on the version's own held-out set; "then promoted": the model promoted at
    # the time, scored on that same set (the comparison the promotion rule made).
    click.echo(f"{'':1} {'version':16}  {'roc_auc':>7}  {'then promoted':>22}  {'brier':>6}  "
               f"{'samples':>7}  registered")
    for v in versions:
        m = v.get("metrics", {})
        ev = v.get("evaluation", {})
        against = (ev.get("against_metrics") or {}).get("roc_auc")
        then = f"{ev['against'][:12]} {against:.4f}" if ev.get("against") and against else "-"
        when = datetime.fromtimestamp(v.get("registered_at", 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{'*' if v['promoted'] else ' '} {v['version']:16}  {m.get('roc_auc', 0):7.4f}  "
                   f"{then:>22}  {m.get('brier', 0):6.4f}  {v.get('info', {}).get('samples', 0):7d}  {when}")


@models_group.command("promote")
@click.argument("version")
@click.option("--rescore/--no-rescore", default=True, show_default=True,
              help="Start the batch rescoring of all customers with this version.")
@json_option
def promote_cmd(version: str, rescore: bool, as_json: bool) -> None:
    """Point scoring at VERSION (a rollback when it is an older one)."""
    rt = _runtime(with_app=rescore)
    ptr = _registry(rt).promote(version, reason="mesh models promote")
    run_id = _start_rescore(rt, f"promoted {version} (cli)") if rescore else None
    if as_json:
        emit_json({"promoted": ptr.version, "seq": ptr.seq, "rescore_run_id": run_id})
        return
    click.echo(f"promoted {ptr.version} (promotion #{ptr.seq})")
    if run_id:
        click.echo(f"rescoring all customers: run {run_id}")


@models_group.command("rescore")
@json_option
def rescore_cmd(as_json: bool) -> None:
    """Rescore every customer with the promoted model (a chord over shards, gpu-batch)."""
    rt = _runtime(with_app=True)
    run_id = _start_rescore(rt, "rescore (cli)")
    if as_json:
        emit_json({"rescore_run_id": run_id})
    else:
        click.echo(f"rescoring all customers: run {run_id}")


@models_group.command("history")
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
def history_cmd(limit: int, as_json: bool) -> None:
    """Registrations, promotions and kept-model decisions, newest first."""
    entries = _registry(_runtime()).history(limit)
    if as_json:
        emit_json(entries)
        return
    for e in entries:
        when = datetime.fromtimestamp(e.get("at", 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
        what = e.get("version") or e.get("candidate")
        click.echo(f"{when}  {e.get('event', '?'):10}  {what}  {e.get('why') or e.get('reason') or ''}")


def _start_rescore(rt: Any, reason: str) -> str:
    from worker_mesh.events.base import Envelope
    from worker_mesh.events.catalog import ModelRetrainRequested
    from worker_mesh.workers.churn.lifecycle import start_rescore

    cause = Envelope.wrap(ModelRetrainRequested(reason=reason), producer="cli")
    return start_rescore(rt.app, cause)


COMMANDS = [train_cmd, models_group]
