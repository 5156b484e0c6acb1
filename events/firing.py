"""Firing due coalescing slots: lease them, start each slot's run (the latest event
held, ``coalesced=<count>``), then record the run marker and release the slot in one
MULTI. A dispatcher that dies in between leaves a leased slot that fires again when
the lease (``dispatcher.claim_idle_ms``) runs out; the run marker keeps a run that did
start from starting twice. See ``events/coalesce.py`` for the slot layout.
"""

from __future__ import annotations

import redis

from worker_mesh.events.catalog import EventCatalog
from worker_mesh.events.coalesce import CoalesceStore, DueSlot
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.routing import StartRequest, WorkflowStarter
from worker_mesh.events.wire import decode
from worker_mesh.mesh.errors import MeshError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import metrics


def entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class SlotFirer:
    def __init__(self, client: redis.Redis, settings: MeshSettings, keys: Keys,
                 starter: WorkflowStarter, dlq: DeadLetters, coalesce: CoalesceStore,
                 catalog: EventCatalog) -> None:
        self.r = client
        self.d = settings.dispatcher
        self.keys = keys
        self.starter = starter
        self.dlq = dlq
        self.coalesce = coalesce
        self.catalog = catalog
        self.partitions = settings.streams.partitions
        self.max_bytes = settings.streams.max_payload_bytes

    def fire_due(self, now_ms: int) -> int:
        """Start the runs of the slots due at ``now_ms``; returns how many started."""
        started = 0
        for p in range(self.partitions):
            slots = self.coalesce.take(p, now_ms, self.d.claim_idle_ms)
            if slots:
                started += self._fire(p, slots, now_ms)
        return started

    def _fire(self, p: int, slots: list[DueSlot], now_ms: int) -> int:
        ready: list[tuple[DueSlot, StartRequest | None]] = []
        for slot in slots:
            raw = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in slot.fields.items()}
            try:
                env = decode(raw, self.max_bytes, self.catalog)
            except MeshError as exc:  # the catalog changed under a held event
                self.dlq.add("invalid", f"held event no longer valid: {exc}", slot.fields,
                             source="dispatcher", stream=self.keys.stream(p), entry_id=slot.entry_id)
                ready.append((slot, None))
                continue
            attempt = slot.fields.get("replay", "")
            run_id = self.starter.run_id(slot.workflow, env, attempt)
            ready.append((slot, StartRequest(slot.workflow, env, run_id, slot.count, slot.fields)))
        pipe = self.r.pipeline(transaction=False)
        for _, req in ready:
            if req is not None:
                pipe.exists(self.keys.run_marker(p, req.run_id))
        seen = iter(pipe.execute())
        todo = [(slot, req) for slot, req in ready if req is not None and not next(seen)]
        errors = self.starter.start_many([req for _, req in todo]) if todo else []
        failed = {id(req) for (_, req), err in zip(todo, errors, strict=True) if err is not None}
        pipe = self.r.pipeline(transaction=True)
        for slot, req in ready:
            if req is not None and id(req) in failed:
                self.dlq.queue(pipe, self.dlq.entry(
                    "build_failed", errors[[id(r) for _, r in todo].index(id(req))] or "",
                    slot.fields, source="dispatcher", stream=self.keys.stream(p),
                    entry_id=slot.entry_id, workflow=slot.workflow))
            elif req is not None:
                pipe.set(self.keys.run_marker(p, req.run_id), slot.entry_id, ex=self.d.dedupe_ttl_s)
            self.coalesce.done(pipe, slot, now_ms)
        pipe.execute()
        for slot, req in ready:
            if req is not None and id(req) not in failed:
                metrics.dispatch_latency(now_ms / 1000 - entry_ms(slot.entry_id) / 1000)
        return len(todo) - len(failed)


