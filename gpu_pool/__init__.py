"""GPU pool: routing of GPU work, micro-batching, off-peak deferral, autoscaling."""
