"""GPU cost simulator: workload traces, a SimPy model of the GPU pool driven by
``gpu_pool``'s own policy, windows, hold decision and batch settings, and its reports
(docs/gpu-pool.md, "Cost, simulated")."""

from worker_mesh.mesh.extras import require

require("simpy", "gpu-sim")
