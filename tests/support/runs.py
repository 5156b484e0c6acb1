"""Helpers to put runs in a ledger directly (tests of readers: status, exporter)."""

from __future__ import annotations

import uuid

from worker_mesh.mesh.runs import FAILED, RunLedger, RunRecord, StepInfo


def record(ledger: RunLedger, workflow: str, *, steps: tuple[str, ...] = ("a", "b"),
           run_id: str | None = None, now: float | None = None) -> RunRecord:
    rec = RunRecord(run_id=run_id or str(uuid.uuid4()), workflow=workflow, version="1",
                    event_id=uuid.uuid4().hex, event_type="customer.updated", entity="customer:1",
                    steps=[StepInfo(s, f"mesh.probe.{s}", "standard") for s in steps],
                    last=steps[-1], canvas="{}", attrs={"fields": "{}"})
    ledger.start_many([rec], now=now)
    return rec


def finished_run(ledger: RunLedger, workflow: str, *, ok: bool, started_at: float,
                 now: float) -> str:
    """A run started at ``started_at`` and ended at ``now`` (succeeded or failed)."""
    rec = record(ledger, workflow, steps=("only",), now=started_at)
    if ok:
        ledger.step_done(rec.run_id, "only", {"ok": True}, now=now)
    else:
        ledger.end(rec.run_id, FAILED, "probe failure", now=now)
    return rec.run_id
