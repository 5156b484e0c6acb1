"""Re-export of the process helpers (they live in the package: the demo uses them too)."""

from worker_mesh.workers.procs import ROOT, Proc, child_env, start, wait_for

__all__ = ["ROOT", "Proc", "child_env", "start", "wait_for"]
