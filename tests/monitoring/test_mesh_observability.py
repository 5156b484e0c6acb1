"""A running mini mesh observed for real: embedded Redis, `mesh exporter`, a prefork
worker (2 processes), a dispatcher, Flower, and Debian's Prometheus scraping them.

* every Grafana panel's query returns series through Prometheus's HTTP API;
* Flower's API lists the tasks the worker ran;
* the prefork worker's /metrics add up across its two processes (no lost samples).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.procs import Proc, start, wait_for
from worker_mesh.chains.loader import load_workflows
from worker_mesh.events import CustomerActivity, CustomerUpdated, Publisher
from worker_mesh.gpu_pool import cost
from worker_mesh.mesh.embedded import EmbeddedRedis, free_port
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring.grafana.dashboards import OUT as DASHBOARDS
from worker_mesh.workers.app import create_app

MODULES = '["tests.support.probe_tasks", "tests.monitoring.mesh_probe"]'
FLOWER_AUTH = "mesh:flower-test"
PIDS_TASKS = 40


@dataclass
class Mesh:
    settings: MeshSettings
    client: redis.Redis
    prom: str
    worker_metrics: str
    flower: str
    procs: dict[str, Proc]
    meta: dict[str, Any]


def _get(url: str, auth: str | None = None, timeout: float = 10) -> Any:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _up(url: str, auth: str | None = None) -> bool:
    try:
        _get(url, auth, timeout=2)
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


def _prometheus(tmp: Path, port: int, targets: dict[str, int]) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: run scripts/system-deps.sh --test"
    scrape = [{"job_name": job, "scrape_interval": "1s", "scrape_timeout": "900ms",
               "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]} for job, p in targets.items()]
    cfg = tmp / "prometheus.yml"
    cfg.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                               "scrape_configs": scrape}))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def mesh(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("observability")
    ports = {name: free_port() for name in ("worker", "dispatcher", "exporter", "prom", "flower")}
    base = {
        "MESH_REDIS_URL": redis_server.url,
        "MESH_REDIS_KEY_PREFIX": "obs" + uuid.uuid4().hex[:8],
        "MESH_CELERY_EXTRA_MODULES": MODULES,
        "MESH_DISPATCHER_BLOCK_MS": "50",
        "MESH_MONITORING_HEARTBEAT_S": "1",
        "MESH_MONITORING_EXPORTER_PORT": str(ports["exporter"]),
        "MESH_MONITORING_FLOWER_PORT": str(ports["flower"]),
        "MESH_MONITORING_MULTIPROC_DIR": str(tmp / "metrics"),
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_FLOW_LIMITS": json.dumps({"probe-llm": {
            "requests_per_interval": 2, "tokens_per_interval": 1000, "interval_s": 2}}),
        "MESH_FLOW_CONCURRENCY": '{"probe": 1}',
        "MESH_FLOW_BURST_FRACTION": "1",
    }
    settings = MeshSettings.load(base)

    def with_port(port: int) -> MeshSettings:
        return MeshSettings.load(base | {"MESH_MONITORING_METRICS_PORT": str(port)})

    logs = tmp / "logs"
    procs: dict[str, Proc] = {}
    prom = None
    try:
        procs["flower"] = start("flower", ["flower"], MeshSettings.load(
            base | {"MESH_MONITORING_FLOWER_BASIC_AUTH": FLOWER_AUTH}), logs)
        procs["exporter"] = start("exporter", ["exporter"], settings, logs)
        procs["worker"] = start("worker", ["worker", "-Q", "cpu,io,gpu,gpu-batch", "-c", "2",
                                           "-n", "obs@%h"], with_port(ports["worker"]), logs)
        procs["dispatcher"] = start("dispatcher", ["dispatcher"], with_port(ports["dispatcher"]), logs)
        prom = _prometheus(tmp, ports["prom"], {"mesh-worker": ports["worker"],
                                                "mesh-dispatcher": ports["dispatcher"],
                                                "mesh-exporter": ports["exporter"]})
        prom_url = f"http://127.0.0.1:{ports['prom']}"
        worker_metrics = f"http://127.0.0.1:{ports['worker']}/metrics"
        flower_url = f"http://127.0.0.1:{ports['flower']}"
        for name, url, auth in (("worker", worker_metrics, None),
                                ("dispatcher", f"http://127.0.0.1:{ports['dispatcher']}/metrics", None),
                                ("exporter", f"http://127.0.0.1:{ports['exporter']}/metrics", None),
                                ("prometheus", f"{prom_url}/-/ready", None),
                                ("flower", f"{flower_url}/api/workers", FLOWER_AUTH)):
            wait_for(lambda u=url, a=auth: _up(u, a), timeout_s=90, interval_s=0.5,
                     what=f"{name} to serve {url}")
        client = make_client(settings.redis)
        keys = Keys(settings.redis.key_prefix)
        wait_for(lambda: client.hlen(keys.ns("mon", "workers")), timeout_s=60,
                 what="the worker's heartbeat")
        mesh = Mesh(settings, client, prom_url, worker_metrics, flower_url, procs,
                    {"run_id": "obs-run", "workflow": "probe", "workflow_version": "1"})
        _demo(mesh)
        yield mesh
    finally:
        for p in procs.values():
            p.stop()
        if prom is not None:
            prom.terminate()
            prom.wait(20)


def _demo(mesh: Mesh) -> None:
    """A short demo: events that start probe workflows, an invalid event, tasks that
    exercise the GPU/model/result metrics, a failing task, and many short tasks."""
    s, r = mesh.settings, mesh.client
    keys = Keys(s.redis.key_prefix)
    pub = Publisher(r, s.streams, keys)
    pub.publish_many([CustomerActivity(customer_id=f"c{i}", logins_30d=i, active_days_30d=3)
                      for i in range(5)])
    pub.publish(CustomerUpdated(customer_id="c1", plan="pro"))
    r.xadd(keys.stream(0), {"id": "bad", "type": "customer.updated", "v": "1",
                            "ts": "not a time", "payload": "{}"})
    load_workflows(s)
    app = create_app(s)
    app.signature("mesh.test.mon.gpu", args=(mesh.meta,)).apply_async()
    app.signature("mesh.test.mon.fail", args=(mesh.meta,)).apply_async()
    for i in range(PIDS_TASKS):
        app.signature("mesh.test.mon.pid", args=(mesh.meta, i)).apply_async()
    for i in range(3):
        app.signature("mesh.test.mon.flow", args=(mesh.meta, i)).apply_async()
    cost.record(r, keys, "embed", 1.5, offpeak=False, deferred=False)
    stats = RunLedger(r, keys)
    wait_for(lambda: "probe" in stats.last_success(), timeout_s=90, what="a probe run to succeed")
    wait_for(lambda: r.xlen(keys.dlq) >= 1, timeout_s=60, what="the invalid event dead-lettered")
    wait_for(lambda: r.llen(keys.ns("test", "mon", "pids")) == PIDS_TASKS, timeout_s=90,
             what="the short tasks to run")
    wait_for(lambda: r.llen(keys.ns("test", "mon", "flow")) == 3, timeout_s=60,
             what="the rate-limited tasks to run")


def _panel_queries() -> list[tuple[str, str, str]]:
    """Every panel target of the committed dashboard JSON files."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        name, board = path.name, json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((name, panel["title"], target["expr"]))
    return out


def _query(prom: str, expr: str) -> dict[str, Any]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return _get(url)
    except urllib.error.HTTPError as exc:  # 400: the query does not parse
        return json.loads(exc.read() or b"{}") | {"http_status": exc.code}


def test_every_dashboard_panel_query_returns_series(mesh: Mesh) -> None:
    # Given: the workflow variable's values come from Prometheus like Grafana reads them.
    url = f"{mesh.prom}/api/v1/label/workflow/values?" + urllib.parse.urlencode(
        {"match[]": "mesh_workflow_sla_seconds"})
    wait_for(lambda: "probe" in _get(url)["data"], timeout_s=60,
             what="the workflow variable to offer 'probe'")
    queries = _panel_queries()
    assert len(queries) >= 30

    # When / Then: each query succeeds and returns at least one series.
    failures: dict[str, str] = {}
    deadline = time.monotonic() + 90
    pending = list(queries)
    while pending and time.monotonic() < deadline:
        still = []
        for board, title, expr in pending:
            res = _query(mesh.prom, expr.replace("$workflow", "probe"))
            if res.get("status") != "success":
                failures[f"{board} / {title}: {expr}"] = res.get("error", "error")
                continue
            if not res["data"]["result"]:
                still.append((board, title, expr))
        pending = still
        if pending:
            time.sleep(1)
    for board, title, expr in pending:
        failures[f"{board} / {title}: {expr}"] = "no series"
    assert not failures, json.dumps(failures, indent=2)


def test_flower_api_lists_the_tasks_the_worker_ran(mesh: Mesh) -> None:
    def tasks() -> dict[str, Any]:
        return _get(f"{mesh.flower}/api/tasks?limit=1000", FLOWER_AUTH)

    def seen() -> dict[str, Any]:
        t = tasks()
        names = {v.get("name") for v in t.values()}
        return t if {"mesh.test.mon.pid", "mesh.test.mon.fail", "mesh.probe.record"} <= names else {}

    t = wait_for(seen, timeout_s=60, interval_s=1, what="Flower to list the demo's tasks")
    states = {(v["name"], v["state"]) for v in t.values()}
    assert ("mesh.test.mon.fail", "FAILURE") in states
    assert ("mesh.test.mon.pid", "SUCCESS") in states
    assert sum(1 for v in t.values() if v["name"] == "mesh.test.mon.pid") == PIDS_TASKS
    # Without credentials the API is closed.
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(f"{mesh.flower}/api/tasks")
    assert err.value.code == 401


def _samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_prefork_worker_metrics_add_up_across_processes(mesh: Mesh) -> None:
    # Given: the short tasks ran in both processes of the 2-process pool.
    keys = Keys(mesh.settings.redis.key_prefix)
    pids = {int(p) for p in mesh.client.lrange(keys.ns("test", "mon", "pids"), 0, -1)}
    assert len(pids) == 2, f"expected both pool processes to run tasks, got {pids}"

    # When: the parent's /metrics is read.
    text = _get(mesh.worker_metrics)

    # Then: every execution is counted once, whichever process ran it.
    runs = _samples(text, "mesh_task_runs_total", task="mesh.test.mon.pid", outcome="succeeded")
    count = _samples(text, "mesh_task_duration_seconds_count", task="mesh.test.mon.pid")
    assert runs == PIDS_TASKS
    assert count == PIDS_TASKS
    assert _samples(text, "mesh_task_failures_total", task="mesh.test.mon.fail",
                    error="permanent") == 1
