"""The tutorial's code (docs/your-workflow.md) runs as written: the ``examples/orders``
package's own tests, in a fresh interpreter with only that package added to the path,
as a team would run them (a real redis-server, dispatcher and worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_the_orders_example_passes_its_own_tests() -> None:
    pkg = ROOT / "examples" / "orders"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(pkg), str(ROOT)])
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(pkg / "tests")], cwd=pkg, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "3 passed" in res.stdout


def test_the_example_workflow_module_stays_short() -> None:
    lines = (ROOT / "examples" / "orders" / "orders" / "workflows.py").read_text().splitlines()
    code = [ln for ln in lines if ln.strip()]
    assert len(code) <= 60, len(code)


def test_the_tutorial_shows_the_example_code_verbatim() -> None:
    page = (ROOT / "docs" / "your-workflow.md").read_text()
    for path in ("examples/orders/orders/workflows.py", "examples/orders/tests/test_orders.py"):
        assert (ROOT / path).read_text().rstrip() in page, f"docs/your-workflow.md drifted from {path}"


def test_a_teams_event_types_and_workflows_are_listed_by_the_cli() -> None:
    pkg = ROOT / "examples" / "orders"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(PYTHONPATH=os.pathsep.join([str(pkg), str(ROOT)]),
               MESH_CELERY_EXTRA_MODULES='["orders.workflows"]', MESH_WORKFLOWS_BUILTIN="false")
    schema = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "events", "schema", "--type",
                             "order.placed"], env=env, capture_output=True, text=True, timeout=120)
    assert schema.returncode == 0, schema.stderr
    assert '"order.placed@1"' in schema.stdout and '"items"' in schema.stdout
    wfs = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "workflows", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert wfs.returncode == 0, wfs.stderr
    import json

    names = {w["workflow"] for w in json.loads(wfs.stdout)}
    assert names == {"order-scoring", "order-review"}  # the built-in pack is off
