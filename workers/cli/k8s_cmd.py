"""`mesh k8s render|check|generate`: the Kubernetes manifests under k8s/.

``render`` prints an overlay's manifests through kustomize (what `kubectl apply -k`
would send). ``check`` renders every overlay and validates it offline: built-in kinds
against the Kubernetes API schemas, CRDs against k8s/schemas, the policy checks of
``_k8s_policy``, and that the generated files are in sync with their sources.
``generate`` rewrites those generated files (KEDA ScaledObjects from the settings and
scaling policy, the PrometheusRule from monitoring/prometheus/alerts.yml).
"""

from __future__ import annotations

import sys

import click

from worker_mesh.workers.cli import _k8s
from worker_mesh.workers.cli._common import emit_json, json_option
from worker_mesh.workers.cli._k8s_policy import run_checks

GPU_POOL_OVERLAYS = ("prod", "prod-autoscaler")
"""Overlays that schedule GPU workers on a GPU node pool (dev runs them on CPU)."""


@click.group("k8s")
def k8s_group() -> None:
    """Kubernetes manifests (k8s/): render, validate, regenerate derived files."""


@k8s_group.command("render")
@click.option("--overlay", "-o", default="prod", show_default=True,
              help="Directory under k8s/overlays (dev, prod, prod-autoscaler).")
def render_cmd(overlay: str) -> None:
    """Print the overlay's manifests (kustomize)."""
    try:
        click.echo(_k8s.render(overlay), nl=False)
    except _k8s.RenderError as exc:
        raise click.ClickException(str(exc)) from exc


@k8s_group.command("check")
@click.option("--overlay", "-o", "only", multiple=True, help="Check only these overlays.")
@click.option("--kubernetes-version", default=_k8s.K8S_VERSION, show_default=True)
@json_option
def check_cmd(only: tuple[str, ...], kubernetes_version: str, as_json: bool) -> None:
    """Validate every overlay offline; exit 1 on any problem."""
    report: dict[str, dict[str, list[str]]] = {}
    stale = [str(p.relative_to(_k8s.REPO)) for p in _k8s.stale_files()]
    report["generated"] = {"stale": [f"{p} is out of date: run `mesh k8s generate`" for p in stale]}
    for overlay in only or _k8s.overlays():
        try:
            objs = _k8s.load_objects(_k8s.render(overlay))
        except _k8s.RenderError as exc:
            report[overlay] = {"render": [str(exc)]}
            continue
        results = {"schema": _k8s.validate_objects(objs, kubernetes_version)}
        results.update(run_checks(objs, gpu_pool=overlay in GPU_POOL_OVERLAYS))
        report[overlay] = results
    problems = sum(len(v) for r in report.values() for v in r.values())
    if as_json:
        emit_json({"ok": problems == 0, "report": report})
    else:
        for section, results in report.items():
            for check, errors in results.items():
                mark = "ok  " if not errors else "FAIL"
                click.echo(f"{mark} {section:<16} {check}")
                for e in errors:
                    click.echo(f"       - {e}")
        click.echo(f"{problems} problem(s)")
    sys.exit(1 if problems else 0)


@k8s_group.command("generate")
@click.option("--check", "check_only", is_flag=True, help="Only report stale files (exit 1).")
def generate_cmd(check_only: bool) -> None:
    """Rewrite the generated manifests from their sources of truth."""
    if check_only:
        stale = _k8s.stale_files()
        for p in stale:
            click.echo(f"stale: {p.relative_to(_k8s.REPO)}")
        sys.exit(1 if stale else 0)
    for p in _k8s.generate():
        click.echo(f"wrote {p.relative_to(_k8s.REPO)}")


COMMANDS = [k8s_group]
