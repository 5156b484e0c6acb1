"""Run history: what the per-step record and the history indexes cost.

Two measurements on one throw-away ``redis-server``:

* **step cost**: ``begin`` + ``step_done`` of every step of 3-step runs, through the
  ledger as it was before run history (``--baseline-rev``, loaded from git) and as it
  is now, alternating rounds in the same process (same-run baseline). Reported per
  step: client wall time (µs, one round trip each) and Redis CPU (µs, from
  ``INFO commandstats``: the scripts' own time, what the shared Redis pays).
* **memory per run**: ``--runs`` runs (default 20,000) with realistic fields (the mix
  of ``_common.realistic_events``: churn runs of 3 steps, re-embedding runs of 2 with a
  ~1 KB document, content runs of 3), each run to its end (2% fail), then
  ``used_memory`` per run, split into history (run records and indexes) and memo
  (step results kept for resuming), extrapolated to 1,000,000 runs; the ledger before
  run history measured the same way beside it.

Run: ``python -m benchmarks.runs_ledger [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from benchmarks._common import ROOT, bench_settings, embedded_redis, emit, realistic_events, summary
from worker_mesh.events.base import Envelope
from worker_mesh.events.wire import encode
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client

BASELINE_REV = "82aa6ff"
"""main with the run ledger, before run history (issue 12)."""
MIB = 1024 * 1024


def load_baseline(rev: str) -> ModuleType:
    """``mesh/runs.py`` as of ``rev``, imported as a module of its own."""
    text = subprocess.run(["git", "show", f"{rev}:mesh/runs.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="mesh-runs-before-")) / "runs_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("runs_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["runs_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _record(mod: ModuleType, workflow: str, steps: list[str], fields: dict[str, str],
            entity: str) -> Any:
    return mod.RunRecord(
        run_id=str(uuid.uuid4()), workflow=workflow, version="1", event_id=fields["id"],
        event_type=fields["type"], entity=entity,
        steps=[mod.StepInfo(s, f"mesh.{workflow}.{s}", "standard") for s in steps],
        last=steps[-1], canvas=json.dumps({"task": "x" * 600}),  # dropped when the run ends
        attrs={"fields": json.dumps(fields), "coalesced": "1"})


def _cpu_us(client: redis.Redis) -> float:
    stats: Any = client.info("commandstats")
    return float(sum(v.get("usec", 0) for k, v in stats.items() if k.startswith("cmdstat_evalsha")))


def step_cost(client: redis.Redis, mods: dict[str, ModuleType], runs: int, rounds: int) -> dict[str, Any]:
    s = bench_settings_for(client)
    fields = {"id": "e", "type": "customer.activity", "key": "customer:1",
              "payload": '{"customer_id":"1","logins_30d":3,"active_days_30d":2}'}
    result = {"model_version": "churn-abc123", "wrote": "result:churn:1", "score": 0.42}
    wall: dict[str, list[float]] = {n: [] for n in mods}
    cpu: dict[str, list[float]] = {n: [] for n in mods}
    for _ in range(rounds):
        for name, mod in mods.items():
            led = mod.RunLedger(client, Keys("c" + uuid.uuid4().hex[:6]), s)
            recs = [_record(mod, "churn", ["merge", "score", "store"], fields, f"customer:{i}")
                    for i in range(runs)]
            led.start_many(recs)
            cpu0, t0 = _cpu_us(client), time.perf_counter()
            for rec in recs:
                for st in ("merge", "score", "store"):
                    led.begin(rec.run_id, st, "standard")
                    led.step_done(rec.run_id, st, result)
            steps = runs * 3
            wall[name].append((time.perf_counter() - t0) / steps * 1e6)
            cpu[name].append((_cpu_us(client) - cpu0) / steps)
    out: dict[str, Any] = {n: {"wall_us_per_step": summary(wall[n]),
                               "redis_cpu_us_per_step": summary(cpu[n])} for n in mods}
    b, a = out["before"], out["after"]
    out["ratio_after_before"] = {
        k: round(a[k]["median"] / b[k]["median"], 3)
        for k in ("wall_us_per_step", "redis_cpu_us_per_step")}
    out["added_us_per_step"] = {
        k: round(a[k]["median"] - b[k]["median"], 2)
        for k in ("wall_us_per_step", "redis_cpu_us_per_step")}
    return out


def bench_settings_for(client: redis.Redis) -> Any:
    from worker_mesh.mesh.settings.runs import RunSettings

    return RunSettings()


def _shape(env: Envelope, rng: random.Random) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(workflow, steps, step results) shaped like the real workflows' results."""
    p: Any = env.payload
    if env.type.startswith("customer."):
        cid = p.customer_id
        merged = {"customer_id": cid, "profile_revision": rng.randrange(1, 50), "changed": True,
                  "event_id": env.event_id}
        scored = merged | {"score": rng.random(), "model_version": "churn-3f9a1c2b7d10",
                           "model_seq": 4, "plan": "pro", "imputed": []}
        stored = {"customer_id": cid, "score": scored["score"], "status": "written",
                  "model_version": scored["model_version"], "high_risk_published": None,
                  "wrote": f"result:churn:{cid}"}
        return "churn", ["merge", "score", "store"], [merged, scored, stored]
    if env.type == "content.updated":
        chunks = [{"index": i, "text": p.body[i * 400:(i + 1) * 400], "hash": uuid.uuid4().hex}
                  for i in range(3)]
        plan = {"content_id": p.content_id, "title": p.title, "version": p.version,
                "event_id": env.event_id, "chunks": chunks}
        embedded = {"content_id": p.content_id, "model_version": "all-MiniLM-L6-v2@53aa51172d14",
                    "content_version": p.version, "chunks": 3, "embedded": 1, "skipped": 2,
                    "removed": 0, "stale": False, "wrote": f"vec:{p.content_id}"}
        return "reembed", ["plan", "embed"], [plan, embedded]
    brief = {"content_id": p.content_id, "topic": p.topic, "keywords": p.keywords}
    draft = {"title": "Reducing churn", "body": "w " * 600, "model_version": "template-1",
             "attempts": 1, "seo": {"score": 0.8}, "brief": brief}
    published = {"content_id": p.content_id, "version": 1, "created": True,
                 "model_version": "template-1", "wrote": f"result:content:{p.content_id}"}
    return "content", ["prepare", "generate", "publish"], [brief, draft, published]


def memory(client: redis.Redis, n: int, mod: ModuleType) -> dict[str, Any]:
    import inspect

    rng = random.Random(11)
    keys = Keys("m" + uuid.uuid4().hex[:6])
    led = mod.RunLedger(client, keys, bench_settings_for(client))
    with_step = "step" in inspect.signature(led.end).parameters
    client.execute_command("MEMORY", "PURGE")
    before = int(client.info("memory")["used_memory"])
    failed = 0
    for ev in realistic_events(n, seed=5, entities=max(n // 4, 100)):
        env = Envelope.wrap(ev, producer="app")
        wf, steps, results = _shape(env, rng)
        rec = _record(mod, wf, steps, encode(env, 1 << 20), env.entity_key)
        led.start_many([rec])
        fail_at = len(steps) - 1 if rng.random() < 0.02 else -1
        for i, (st, res) in enumerate(zip(steps, results, strict=True)):
            led.begin(rec.run_id, st, "standard")
            if i == fail_at:
                extra = {"step": st, "error": "PermanentError: provider refused the request"}
                led.end(rec.run_id, "failed", f"workflow {wf} failed at step {st}",
                        **(extra if with_step else {}))
                failed += 1
                break
            led.step_done(rec.run_id, st, res)
    client.execute_command("MEMORY", "PURGE")
    total = int(client.info("memory")["used_memory"]) - before
    memo = history = 0
    for key in client.scan_iter(match=keys.runs_tag() + ":*", count=1000):
        size = int(client.memory_usage(key, samples=0) or 0)
        if b":memo:" in key:
            memo += size
        else:
            history += size
    per = {"all": total / n, "history": history / n, "memo": memo / n}
    return {"runs": n, "failed": failed, "used_memory_bytes": total,
            "note": "history: kept runs.retention_s; memo: kept runs.memo_after_end_s after a "
                    "run ends (failed runs: the retention), so at steady state memo is about "
                    "bytes_per_run.memo x runs ended in that window",
            "bytes_per_run": {k: round(v) for k, v in per.items()},
            "extrapolated_1m_runs_mib": {k: round(v * 1_000_000 / MIB) for k, v in per.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and rounds")
    ap.add_argument("--runs", type=int, default=None, help="runs written for the memory figure")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    args = ap.parse_args()
    n = args.runs or (4000 if args.quick else 20_000)
    with embedded_redis() as server:
        s = bench_settings(server)
        client = make_client(s.redis)
        mods = {"before": load_baseline(args.baseline_rev),
                "after": importlib.import_module("worker_mesh.mesh.runs")}
        cost = step_cost(client, mods, runs=300 if args.quick else 1000, rounds=3 if args.quick else 5)
        mem = {name: memory(client, n, mod) for name, mod in mods.items()}
    emit("runs_ledger", {"params": {"memory_runs": n, "baseline_rev": args.baseline_rev},
                         "step_cost": cost, "memory": mem})


if __name__ == "__main__":
    main()
