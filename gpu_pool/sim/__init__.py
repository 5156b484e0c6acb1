"""GPU cost simulator: traces, a SimPy model of the GPU pool driven by gpu_pool's own policy, deferral and batching settings, and its reports (docs/gpu-pool.md)."""
