"""Every Redis key the mesh writes, in one place.

All keys start with ``<prefix>:`` (``redis.key_prefix``), so several meshes or tenants
share one Redis without seeing each other. Keys that belong to one event partition
carry the hash tag ``{<prefix>:p<N>}`` so that a dispatcher's multi-key operations on a
partition (stream, dedupe keys, outcome counters, coalescing slots) stay in one Redis
Cluster slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "mesh"

    # -- per partition -------------------------------------------------------------
    def tag(self, partition: int) -> str:
        return f"{{{self.prefix}:p{partition}}}"

    def stream(self, partition: int) -> str:
        """The event stream of one partition."""
        return f"{self.tag(partition)}:events"

    def outcomes(self, partition: int) -> str:
        """Hash: outcome -> count of entries of this partition's stream."""
        return f"{self.tag(partition)}:outcomes"

    def dedupe(self, partition: int, idempotency_key: str) -> str:
        return f"{self.tag(partition)}:dedupe:{idempotency_key}"

    def run_marker(self, partition: int, run_id: str) -> str:
        """Set once a workflow run was handed to Celery (skip on redelivery)."""
        return f"{self.tag(partition)}:run:{run_id}"

    def coalesce_due(self, partition: int) -> str:
        """Sorted set: coalescing slot -> time (ms) at which it fires."""
        return f"{self.tag(partition)}:coalesce:due"

    def coalesce_slot(self, partition: int, slot: str) -> str:
        """Hash holding one coalescing slot (latest event, first-seen time, count)."""
        return f"{self.tag(partition)}:coalesce:slot:{slot}"

    # -- global ----------------------------------------------------------------------
    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def dlq_outcomes(self) -> str:
        """Hash: replayed / purged counts of the dead-letter stream."""
        return f"{self.prefix}:dlq:outcomes"

    def celery_prefix(self) -> str:
        """``global_keyprefix`` of the Celery broker and result backend."""
        return f"{self.prefix}:celery:"

    def result(self, kind: str, entity: str) -> str:
        """Latest result of a kind (``churn``, ``content``...) for one entity."""
        return f"{self.prefix}:result:{kind}:{entity}"

    # -- GPU pool (one hash tag: the releaser's multi-key updates stay in one slot) ----
    def gpu_tag(self) -> str:
        return f"{{{self.prefix}:gpu}}"

    def gpu_held_items(self) -> str:
        """Hash: held item id -> JSON {sig, submitted_at, deadline} (bulk GPU work
        waiting for the off-peak window)."""
        return f"{self.gpu_tag()}:held:items"

    def gpu_held_order(self) -> str:
        """Sorted set: held item id -> submission time (release order, FIFO)."""
        return f"{self.gpu_tag()}:held:order"

    def gpu_held_due(self) -> str:
        """Sorted set: held item id -> latest release time (items with a deadline)."""
        return f"{self.gpu_tag()}:held:due"

    def gpu_release_lock(self) -> str:
        """One releaser at a time (SET NX PX)."""
        return f"{self.gpu_tag()}:release:lock"

    def gpu_released_total(self) -> str:
        """Hash: how items left the held set (window, deadline, manual) -> count."""
        return f"{self.gpu_tag()}:released"

    def gpu_cost(self) -> str:
        """Hash: ``<task_type>|<peak|offpeak>|<deferred|direct>`` -> GPU-seconds (float)."""
        return f"{self.gpu_tag()}:cost"

    def gpu_busy(self) -> str:
        """Hash: worker host (pod name) -> tasks in progress there."""
        return f"{self.gpu_tag()}:busy"

    def gpu_busy_seen(self) -> str:
        """Hash: worker host -> unix time its busy count last changed."""
        return f"{self.gpu_tag()}:busy:seen"

    # -- the run ledger (one hash tag: its Lua scripts touch several of these keys) ----
    def runs_tag(self) -> str:
        return f"{{{self.prefix}:runs}}"

    def run(self, run_id: str) -> str:
        """Hash: one run's record (state, workflow, steps, canvas while in flight...)."""
        return f"{self.runs_tag()}:run:{run_id}"

    def run_memo(self, run_id: str) -> str:
        """Hash: step -> JSON result of each step of the run that succeeded."""
        return f"{self.runs_tag()}:memo:{run_id}"

    def run_failed_marker(self, run_id: str) -> str:
        """Dead-lettered once: a failed run the ledger has no record of."""
        return f"{self.runs_tag()}:failed:{run_id}"

    def runs_inflight(self) -> str:
        """Sorted set: run id -> deadline (Unix s) by which it must make progress."""
        return f"{self.runs_tag()}:inflight"

    def runs_counts(self) -> str:
        """Hash: ``started|succeeded|failed|cancelled|redriven`` and
        ``<workflow>|<outcome>`` -> count (what ``mesh audit`` reconciles)."""
        return f"{self.runs_tag()}:counts"

    def runs_stats(self, workflow: str) -> str:
        """Hash: successes, failures, retries of one workflow."""
        return f"{self.runs_tag()}:stats:{workflow}"

    def runs_durations(self, workflow: str) -> str:
        """List: the latest run durations (s) of one workflow, newest first."""
        return f"{self.runs_tag()}:durations:{workflow}"

    def runs_last_success(self) -> str:
        """Hash: workflow -> Unix time of its last successful run (freshness)."""
        return f"{self.runs_tag()}:last_success"

    def replay_grant(self, dlq_id: str) -> str:
        """Set by ``mesh dlq replay`` only: a stream entry may carry ``replay``/``route``
        fields only when the grant of its dead letter exists (producers cannot forge it)."""
        return f"{self.prefix}:replay:grant:{dlq_id}"

    def ns(self, *parts: str) -> str:
        """A key in the mesh's namespace for anything not listed above."""
        return ":".join((self.prefix, *parts))


def partition_of(entity_key: str, partitions: int) -> int:
    """``crc32(utf-8 entity key) % partitions``: easy to compute in any language."""
    if partitions <= 1:
        return 0
    return zlib.crc32(entity_key.encode("utf-8")) % partitions
