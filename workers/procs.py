"""Mesh child processes (workers, dispatchers) for the demo, the tests and benchmarks.

Each is started with the given settings as MESH_* variables, in its own process group,
and can be stopped with any signal, so fault tests can SIGKILL or SIGTERM them.
"""

from __future__ import annotations

import os
import signal as _signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker_mesh.mesh.settings import MeshSettings

ROOT = Path(__file__).resolve().parents[1]


def child_env(settings: MeshSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MESH_")}
    env.update(settings.to_env())
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Signal the main process (as Kubernetes does), or its whole process group."""
        if self.alive():
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                os.kill(self.popen.pid, sig)

    def stop(self, sig: int = _signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.alive():
            self.signal(sig, group=sig == _signal.SIGKILL)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(_signal.SIGKILL, group=True)
                self.popen.wait(10)
        try:  # no orphans: pool children die with the group
            os.killpg(self.popen.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(name: str, args: Sequence[str], settings: MeshSettings, log_dir: Path,
          extra_env: dict[str, str] | None = None) -> Proc:
    """Start ``python -m workers.cli <args>`` in its own process group."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed by the child's lifetime
    popen = subprocess.Popen(
        [sys.executable, "-m", "worker_mesh.workers.cli", *args],
        cwd=ROOT, env=child_env(settings, extra_env), stdout=fh, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Proc(name, popen, log)


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
