"""GPU pool settings: micro-batching, off-peak windows and deferral, autoscaling.

The autoscaling numbers here are the single source for both ways of applying the
policy: ``mesh gpu autoscale`` reads them directly, and the KEDA ScaledObjects in
``k8s/`` are written from the same values (see docs/gpu-pool.md).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BatchLimits(BaseModel):
    """How one task type is micro-batched."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_batch: int = Field(default=64, ge=1)
    """Largest micro-batch gathered into one forward pass."""
    max_wait_ms: int = Field(default=20, ge=0)
    """Longest the first item of a batch waits for more items."""


class GpuSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_batch: int = Field(default=64, ge=1)
    """Default largest micro-batch (task types not in ``batch`` use it)."""
    max_wait_ms: int = Field(default=20, ge=0)
    """Default longest wait for a micro-batch to fill."""
    batch: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Per task type (``embed``, ``churn``...) batch limits (``BatchLimits`` fields),
    overriding the defaults. Kept as plain dicts so the tree round-trips through env.
    Env: ``MESH_GPU_BATCH='{"embed": {"max_batch": 32, "max_wait_ms": 10}}'``."""
    batch_retries: int = Field(default=1, ge=0, le=5)
    """A forward pass that fails as a whole is retried this many times before the
    batch is split to isolate the failing item(s)."""
    offpeak_windows: list[str] = Field(default_factory=lambda: ["01:00-06:00 UTC"])
    """Off-peak windows, ``HH:MM-HH:MM <IANA zone>``; bulk GPU work waits for one."""
    device: str | None = None
    """Torch device; None: ``cuda`` when present, else ``cpu``."""

    # -- deferral ----------------------------------------------------------------------
    deferral_enabled: bool = True
    """Hold bulk GPU work submitted outside a window (False: send it at once)."""
    deadline_lead_s: int = Field(default=600, ge=0)
    """A held item with a deadline is released this long before the deadline."""
    release_interval_s: float = Field(default=15.0, gt=0)
    """How often the releaser looks at the clock and the held set."""
    release_group_size: int = Field(default=0, ge=0)
    """Items sent per release group; 0: the ``embed`` batch size (``max_batch``)."""

    # -- autoscaling (one policy for the controller and for KEDA) ----------------------
    target_per_worker: int = Field(default=128, ge=1)
    """Outstanding items (queued + reserved) one GPU worker is sized for."""
    min_workers: int = Field(default=0, ge=0)
    """Floor while there is work or during pre-warm; 0 allows scale-to-zero."""
    max_workers: int = Field(default=4, ge=1)
    idle_to_zero_s: int = Field(default=300, ge=0)
    """No work at all for this long: scale to ``min_workers`` (zero by default)."""
    prewarm_s: int = Field(default=600, ge=0)
    """Start ``prewarm_workers`` this long before an off-peak window opens (when
    there is held work), so the pool is warm when the held items are released."""
    prewarm_workers: int = Field(default=1, ge=0)
    cooldown_s: int = Field(default=120, ge=0)
    """Least time between two scale-downs (scale-up is immediate)."""
    deployment: str = "mesh-worker-gpu"
    """The GPU worker Deployment the controller scales."""
    namespace: str = "mesh"
    pod_selector: str = "app.kubernetes.io/component=worker-gpu"
    """Label selector of the GPU worker pods (for pod-deletion-cost on busy pods)."""
    autoscale_interval_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> GpuSettings:
        for task_type, lim in self.batch.items():
            try:
                BatchLimits(**lim)
            except ValueError as exc:
                raise ValueError(f"gpu.batch[{task_type!r}]: {exc}") from exc
        if self.min_workers > self.max_workers:
            raise ValueError("gpu.min_workers must not exceed gpu.max_workers")
        return self

    def limits(self, task_type: str) -> BatchLimits:
        """Batch limits of ``task_type`` (the per-type entry, else the defaults)."""
        return BatchLimits(**({"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms}
                              | self.batch.get(task_type, {})))

    def group_size(self) -> int:
        return self.release_group_size or self.limits("embed").max_batch
