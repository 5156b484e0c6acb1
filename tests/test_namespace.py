"""One import namespace: the project's code is imported as ``worker_mesh.*`` only, never
under the top-level folder names (an application's own ``events`` or ``workers``
package must not collide with ours, and no module may be loaded twice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("mesh", "events", "chains", "workers", "gpu_pool", "monitoring")


def test_a_process_running_the_mesh_imports_no_top_level_folder_name() -> None:
    code = ("import sys; import worker_mesh.workers.cli, worker_mesh.events.dispatcher, "
            "worker_mesh.monitoring.collector; from worker_mesh.workers.app import create_app; "
            "from worker_mesh.mesh.settings import MeshSettings; "
            "create_app(MeshSettings.load({'MESH_REDIS_URL': 'redis://127.0.0.1:1/0'})); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FOLDERS!r}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", res.stdout


def test_no_source_imports_a_folder_by_its_top_level_name() -> None:
    import re

    bad = re.compile(rf"^\s*(from|import) ({'|'.join(FOLDERS)})(\.|\s)", re.M)
    files = {p.resolve() for d in (*FOLDERS, "worker_mesh", "tests", "benchmarks", "examples")
             for p in (ROOT / d).rglob("*.py")}
    offenders = sorted(str(p.relative_to(ROOT)) for p in files
                       if bad.search(p.read_text(encoding="utf-8")))
    assert offenders == [], offenders
