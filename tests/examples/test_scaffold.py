"""`mesh new workflow NAME` writes a package whose generated test passes unchanged
(run as a team would: its own directory, only it and Worker Mesh on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mesh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.e2e
def test_the_scaffold_runs_unchanged(tmp_path: Path) -> None:
    res = _mesh("new", "workflow", "invoice-check", "--dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    pkg = tmp_path / "invoice-check"
    assert (pkg / "invoice_check" / "workflows.py").exists() and (pkg / "README.md").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(pkg), str(ROOT)])
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=pkg, env=env, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stdout[-4000:] + test.stderr[-2000:]
    assert "2 passed" in test.stdout


@pytest.mark.parametrize("bad", ["Invoice", "1st", "class", "a b", "x" * 60])
def test_a_bad_name_is_refused_with_the_rule(tmp_path: Path, bad: str) -> None:
    res = _mesh("new", "workflow", bad, "--dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "workflow name" in res.stderr
    assert not any(tmp_path.iterdir())


def test_an_existing_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    res = _mesh("new", "workflow", "orders", "--dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "exists" in res.stderr
