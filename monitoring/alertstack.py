"""A local Prometheus + Alertmanager on the shipped rules and configuration, for the
detection benchmark and the tests (Debian's ``prometheus`` and
``prometheus-alertmanager``; ``scripts/system-deps.sh --test`` installs them).

Why this lives in ``monitoring``: it is how the shipped files are run for real, the
same way in the benchmark and in the tests, with only what must differ on one machine
changed: every receiver of ``monitoring/alertmanager/alertmanager.yml`` points at one
webhook, clustering is off, and Prometheus scrapes the given local targets at the
recommended intervals.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from worker_mesh.mesh.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
ALERTMANAGER_CONFIG = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
SCRAPE_INTERVAL = "15s"
EVALUATION_INTERVAL = "15s"


def binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ConfigError(f"{' or '.join(names)} not found: run scripts/system-deps.sh --test")


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped configuration with every receiver replaced by ``webhook_url``
    (routing, grouping and inhibition unchanged)."""
    doc = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    doc["receivers"] = [{"name": r["name"], "webhook_configs": [
        {"url": webhook_url, "send_resolved": True}]} for r in doc["receivers"]]
    return doc


def prometheus_config(targets: list[str], alertmanager: str, rules: Path = RULES,
                      scrape_interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval,
                   "evaluation_interval": EVALUATION_INTERVAL, "scrape_timeout": "10s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "mesh", "static_configs": [{"targets": targets}]}],
    }


@dataclass
class Stack:
    prometheus_url: str
    alertmanager_url: str
    procs: list[subprocess.Popen[bytes]]


def _wait_ready(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


def start_alertmanager(workdir: Path, port: int, webhook_url: str) -> subprocess.Popen[bytes]:
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump(alertmanager_config(webhook_url), sort_keys=False))
    (workdir / "am-data").mkdir(exist_ok=True)
    log = open(workdir / "alertmanager.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [binary("prometheus-alertmanager", "alertmanager"), f"--config.file={cfg}",
         f"--storage.path={workdir / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address=", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}/-/ready", 30)
    return proc


def start_prometheus(workdir: Path, port: int, targets: list[str], alertmanager: str,
                     rules: Path = RULES) -> subprocess.Popen[bytes]:
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(prometheus_config(targets, alertmanager, rules), sort_keys=False))
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}/-/ready", 60)
    return proc


@contextlib.contextmanager
def stack(workdir: Path, targets: list[str], webhook_url: str, prometheus_port: int,
          alertmanager_port: int, rules: Path = RULES) -> Iterator[Stack]:
    """Alertmanager, then Prometheus scraping ``targets`` (host:port) and sending to it;
    both stopped on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_alertmanager(workdir, alertmanager_port, webhook_url))
        am = f"127.0.0.1:{alertmanager_port}"
        procs.append(start_prometheus(workdir, prometheus_port, targets, am, rules))
        yield Stack(f"http://127.0.0.1:{prometheus_port}", f"http://{am}", procs)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
