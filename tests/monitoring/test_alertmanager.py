"""The shipped Alertmanager configuration: valid (`amtool check-config`), severities
routed to the right receivers (`amtool config routes test`), and its inhibition real:
a running Alertmanager given a dead dispatcher and a stale workflow pages for the
dispatcher only."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from worker_mesh.mesh.embedded import free_port
from worker_mesh.monitoring import alertstack
from worker_mesh.workers.procs import wait_for

CONFIG = alertstack.ALERTMANAGER_CONFIG


def _amtool() -> str:
    path = shutil.which("amtool")
    assert path, "amtool missing: run scripts/system-deps.sh --test (prometheus-alertmanager)"
    return path


def test_amtool_check_config_passes() -> None:
    out = subprocess.run([_amtool(), "check-config", str(CONFIG)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=MeshNoDispatcher", "severity=critical"], "pager"),
    (["alertname=MeshDeadLetterGrowing", "severity=warning", "reason=invalid"], "tickets"),
    (["alertname=Unknown"], "tickets"),
])
def test_severities_reach_their_receivers(labels: list[str], receiver: str) -> None:
    out = subprocess.run([_amtool(), "config", "routes", "test", f"--config.file={CONFIG}",
                          *labels], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver


def test_every_shipped_receiver_is_an_example_of_its_kind() -> None:
    import yaml

    doc = yaml.safe_load(CONFIG.read_text())
    kinds = {k for r in doc["receivers"] for k in r if k.endswith("_configs")}
    assert {"webhook_configs", "email_configs", "slack_configs"} <= kinds
    assert "api_url:" not in CONFIG.read_text(), "secrets come from files (api_url_file)"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    # Receivers point at a closed port: this test reads Alertmanager's own view.
    proc = alertstack.start_alertmanager(tmp_path, port, f"http://127.0.0.1:{free_port()}/x")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _post(url: str, *alerts: dict[str, str]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = [{"labels": a, "startsAt": now} for a in alerts]
    httpx.post(f"{url}/api/v2/alerts", json=body, timeout=10).raise_for_status()


def _states(url: str) -> dict[str, dict]:
    alerts = httpx.get(f"{url}/api/v2/alerts", timeout=10).json()
    return {f"{a['labels']['alertname']}/{a['labels'].get('workflow', '')}"
            f"{a['labels'].get('queue', '')}": a["status"] for a in alerts}


def test_a_dead_dispatcher_does_not_also_page_for_every_stale_workflow(alertmanager: str) -> None:
    # Given: the dispatcher is gone, so two workflows go stale; a dead letter too.
    _post(alertmanager,
          {"alertname": "MeshNoDispatcher", "severity": "critical"},
          {"alertname": "MeshWorkflowStale", "severity": "critical", "workflow": "churn"},
          {"alertname": "MeshWorkflowStale", "severity": "critical", "workflow": "reembed"},
          {"alertname": "MeshDeadLetterGrowing", "severity": "warning", "reason": "invalid",
           "type": "customer.updated"})

    # Then: the stale workflows are inhibited, the dispatcher and the dead letter are not.
    def settled() -> bool:
        s = _states(alertmanager)
        return len(s) == 4 and s["MeshWorkflowStale/churn"]["state"] == "suppressed"

    wait_for(settled, timeout_s=20, interval_s=0.2, what="inhibition applied")
    s = _states(alertmanager)
    assert s["MeshWorkflowStale/reembed"]["inhibitedBy"]
    assert s["MeshNoDispatcher/"]["state"] == "active"
    assert s["MeshDeadLetterGrowing/"]["state"] == "active"


def test_no_worker_for_a_queue_pages_once_for_that_queue(alertmanager: str) -> None:
    _post(alertmanager,
          {"alertname": "MeshNoWorkerForQueue", "severity": "critical", "queue": "cpu"},
          {"alertname": "MeshQueueUnserved", "severity": "critical", "queue": "cpu"},
          {"alertname": "MeshQueueUnserved", "severity": "critical", "queue": "gpu"})
    wait_for(lambda: _states(alertmanager).get("MeshQueueUnserved/cpu", {}).get("state")
             == "suppressed", timeout_s=20, interval_s=0.2, what="inhibition applied")
    assert _states(alertmanager)["MeshQueueUnserved/gpu"]["state"] == "active"
