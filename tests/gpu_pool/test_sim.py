"""The GPU cost simulator: trace format, generator, fluid queues, the simulated pool
driven by the real policy / windows / hold decision, the report and the CLI."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker_mesh.gpu_pool.sim import generator, trace
from worker_mesh.gpu_pool.sim.engine import STRATEGIES, PoolSim
from worker_mesh.gpu_pool.sim.fluid import FluidQueue, WaitHistogram
from worker_mesh.gpu_pool.sim.model import Curve, NodeModel, load_node_model
from worker_mesh.gpu_pool.sim.simulate import default_trace
from worker_mesh.gpu_pool.sim.trace import Record, Trace, TraceError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.cli import cli

MON = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).timestamp()  # window 01:00-06:00 UTC
BY_KEY = {s.key: s for s in STRATEGIES}


def gpu(**env: str):  # type: ignore[no-untyped-def]
    return MeshSettings.load(env).gpu


def node(boot_s: float = 60.0) -> NodeModel:
    """10 items/s at batch 1, 20 at batch 64 (fixed 0.05 s + 0.0478 s/item, roughly)."""
    curve = Curve.fit({1: 10.0, 64: 20.0})
    return NodeModel(boot_s=boot_s, curves={"embed": curve}, release_items_per_s=1000.0)


# -- trace format -------------------------------------------------------------------------
def test_bad_lines_name_the_line_and_the_field() -> None:
    good = '{"time": "2026-03-02T09:00:00Z", "task_type": "embed", "items": 3, "urgent": true}'
    cases = {
        '{"time": "2026-03-02T09:00:00", "task_type": "embed", "items": 3, "urgent": true}': "'time'",
        '{"time": "2026-03-02T09:00:00Z", "task_type": "embed", "items": 0, "urgent": true}': "'items'",
        '{"time": "2026-03-02T09:00:00Z", "task_type": "embed", "items": 1, "urgent": 1, "x": 1}': "'x'",
        '{"time": "2026-03-02T09:00:00Z", "task_type": "embed", "items": 1, "urgent": false, '
        '"deadline": "2026-03-02T08:00:00Z"}': "deadline must be after time",
        "not json": "not JSON",
    }
    for bad, says in cases.items():
        with pytest.raises(TraceError) as err:
            trace.read(io.StringIO(good + "\n" + bad + "\n"))
        assert "line 2" in str(err.value) and says in str(err.value)


def test_round_trip_gz_with_meta_and_sorting(tmp_path: Path) -> None:
    recs = [Record(MON + 60, "embed", 5, False, MON + 7200, 30.0), Record(MON, "embed", 2, True)]
    trace.write(tmp_path / "t.jsonl.gz", recs, {"by": "test"})
    back = trace.read(tmp_path / "t.jsonl.gz")
    assert back.meta == {"by": "test"}
    assert back.records == (recs[1], recs[0])
    assert gzip.decompress((tmp_path / "t.jsonl.gz").read_bytes()).startswith(b'{"meta"')


def test_generator_is_seeded_and_the_shipped_week_is_its_output() -> None:
    p = generator.GeneratorParams()
    a, b = generator.generate(p), generator.generate(p)
    assert a == b and a != generator.generate(p.with_overrides(["seed=16"]))
    shipped = default_trace()
    assert shipped.records == tuple(trace.read(io.StringIO(
        "".join(line + "\n" for line in trace.dump_lines(a)))).records)
    assert shipped.meta["params"] == p.as_dict()
    # the week has what the issue asks for: urgent diurnal traffic, bulk with deadlines,
    # a nightly re-embedding every day and the weekly retrain
    assert {r.task_type for r in a} == {"embed", "churn_rescore"}
    assert sum(1 for r in a if not r.urgent and r.items == p.nightly_items) == 7
    assert all(r.deadline for r in a if not r.urgent)
    with pytest.raises(ValueError, match="nope"):
        p.with_overrides(["nope=1"])


# -- fluid queue --------------------------------------------------------------------------
def test_a_burst_drains_at_the_service_rate_in_fifo_order() -> None:
    q = FluidQueue("gpu")
    q.add(0.0, 100, 0.0, "embed", None)
    out = q.serve(0.0, 5.0, 10.0)  # 50 items in 5 s
    assert out.items == pytest.approx(50)
    q.serve(5.0, 100.0, 10.0)
    assert q.served == pytest.approx(100)
    assert q.waits.mean == pytest.approx(5.0, rel=0.02)  # waits uniform on [0, 10]
    assert q.waits.quantile(0.99) == pytest.approx(9.9, rel=0.06)


def test_a_slow_ramp_waits_only_the_floor_and_overlapping_lines_keep_arrival_order() -> None:
    q = FluidQueue("gpu")
    q.add(0.0, 60, 60.0, "embed", None)  # 1 item/s, served at 10/s
    q.serve(0.0, 30.0, 10.0, floor_s=0.02)
    q.add(30.0, 50, 0.0, "embed", None)  # a burst in the middle of the ramp
    q.serve(30.0, 100.0, 10.0, floor_s=0.02)
    assert q.served == pytest.approx(110)
    # the burst waits (0..5 s); the ramp items after it queue behind it, not for 30 s
    assert q.waits.max < 6.0
    assert q.waits.quantile(0.25) == pytest.approx(0.02, rel=0.06)


def test_late_items_count_as_deadline_misses() -> None:
    q = FluidQueue("gpu-batch")
    q.add(0.0, 100, 0.0, "embed", 5.0)
    q.serve(0.0, 100.0, 10.0, pass_s=0.0)
    assert q.missed == pytest.approx(50, rel=0.01)


def test_histogram_quantiles() -> None:
    h = WaitHistogram()
    h.add_range(0.0, 0.0, 900)
    h.add_range(10.0, 10.0, 100)
    assert h.quantile(0.5) == 0.0 and h.quantile(0.95) == pytest.approx(10.0, rel=0.05)


# -- the simulated pool -------------------------------------------------------------------
def run(recs: list[Record], key: str, **env: str):  # type: ignore[no-untyped-def]
    return PoolSim(Trace(tuple(recs), {}), gpu(**env), node(), BY_KEY[key]).run()


def test_bulk_is_held_outside_the_window_released_at_open_and_prewarmed() -> None:
    noon = MON + 12 * 3600
    recs = [Record(noon, "embed", 2000, False, MON + 86400 + 8 * 3600),
            Record(noon, "embed", 10, True)]
    res = run(recs, "deferred")
    assert res.held_total == 2000 and res.released["window"] == 2000
    assert sum(res.items_done.values()) == pytest.approx(2010)
    assert res.bulk.missed == 0 and res.unfinished == pytest.approx(0, abs=1e-6)
    window_open = MON + 86400 + 3600
    # pre-warm: a node was asked for within prewarm_s (600 s) before the window opened
    assert any(window_open - 600 <= n.requested < window_open for n in res.nodes)
    # and between noon's urgent work and the pre-warm the pool was at zero
    assert any(s.nodes == 0 and noon + 3600 < s.t < window_open - 900 for s in res.samples)


def test_a_deadline_before_the_window_is_released_early_and_met() -> None:
    noon = MON + 12 * 3600
    res = run([Record(noon, "embed", 500, False, noon + 3600)], "deferred")
    assert res.released == {"window": 0.0, "deadline": 500.0}
    assert res.bulk.missed == 0
    assert sum(res.items_done.values()) == pytest.approx(500)


def test_without_deferral_bulk_runs_at_once_and_batching_needs_fewer_node_hours() -> None:
    recs = [Record(MON + 12 * 3600, "embed", 20_000, False, None)]
    plain, batched = run(recs, "autoscaled"), run(recs, "batched")
    assert plain.held_total == 0 and sum(plain.items_done.values()) == pytest.approx(20_000)

    def node_s(r) -> float:  # type: ignore[no-untyped-def]
        return sum(n.removed - n.requested for n in r.nodes)

    assert node_s(batched) < node_s(plain)
    assert max(s.nodes for s in plain.samples) == 4  # the settings' max_workers


def test_any_trace_in_the_format_runs(tmp_path: Path) -> None:
    """Another trace: other task types (the default curve), overlapping spans, a
    deadline that cannot be met is reported, not hidden."""
    recs = [Record(MON + 100, "rerank", 300, True, None, 120.0),
            Record(MON + 130, "embed", 50, True, None, 0.0),
            Record(MON + 200, "embed", 100_000, False, MON + 260, 0.0)]
    res = run(recs, "batched")
    assert sum(res.items_done.values()) == pytest.approx(100_350)
    assert res.bulk.missed > 90_000


def test_default_model_comes_from_the_benchmarks() -> None:
    m = load_node_model()
    bench = json.loads(Path("benchmarks/results/gpu_batching.json").read_text())
    rates = bench["wall"]["items_per_s"]
    assert m.curve("embed").points == {1: rates["one_task_per_chunk"]["median"],
                                       bench["batch"]: rates["micro_batched_queue"]["median"]}
    assert m.curve("embed").items_per_s(1) == pytest.approx(rates["one_task_per_chunk"]["median"])


# -- CLI ----------------------------------------------------------------------------------
def test_simulate_cli_json_and_plot(tmp_path: Path) -> None:
    recs = [Record(MON + 9 * 3600 + i * 60, "embed", 200, True, None, 60.0) for i in range(60)]
    recs.append(Record(MON + 12 * 3600, "embed", 30_000, False, MON + 86400 + 7 * 3600))
    trace.write(tmp_path / "t.jsonl", recs)
    png = tmp_path / "out.png"
    out = CliRunner().invoke(cli, ["gpu", "simulate", "--trace", str(tmp_path / "t.jsonl"),
                                   "--json", "--plot", str(png)], env={})
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    for s in ("fixed", "autoscaled", "batched", "deferred"):
        assert {"node_hours", "cost", "deadline_misses", "urgent_wait_p99_s",
                "urgent_wait_p50_s", "utilisation"} <= set(data["strategies"][s])
        assert data["strategies"][s]["items_done"] == 42_000
    assert data["strategies"]["deferred"]["held_items"] == 30_000
    assert "saved_pct_vs_autoscaled" in data
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(cli, ["gpu", "simulate", "--trace", str(tmp_path / "nope")], env={})
    assert bad.exit_code != 0 and "no such file" in str(bad.exception)  # main() prints it
