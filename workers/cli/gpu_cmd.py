"""`mesh gpu status|release|releaser|autoscale|cost`: operate the GPU pool.

- ``status``: held bulk items, the next off-peak window, GPU queue depths (queued and
  reserved/unacked), busy workers and the pool's desired size from the policy.
- ``release``: send everything held to ``gpu-batch`` now (operator override).
- ``releaser``: the loop that releases held work when a window opens or a deadline
  nears (alternatively beat runs ``mesh.gpu.release_due``).
- ``autoscale``: the controller for clusters without KEDA (``--once`` for one tick).
- ``cost``: the recorded GPU-seconds priced at the prices given (what really ran; for
  node-hours, idle and boot included, see ``simulate``).
- ``trace record|generate``: a GPU workload trace (JSON lines) from a running mesh, or
  the seeded SaaS week.
- ``simulate``: node-hours, cost, utilisation, urgent waits and deadline misses of four
  pool strategies on a trace (``gpu_pool.sim``; docs/gpu-pool.md).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


def _clients() -> tuple[Any, Any, Any]:
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client

    settings = load_settings()
    return settings, make_client(settings.redis), Keys(settings.redis.key_prefix)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat(timespec="seconds")


def status_data(settings: Any, client: Any, keys: Any, now: datetime) -> dict[str, Any]:
    """Everything ``mesh gpu status`` shows, as plain data."""
    from worker_mesh.gpu_pool.controller import busy_hosts, observe
    from worker_mesh.gpu_pool.offpeak import Windows
    from worker_mesh.gpu_pool.policy import PolicyConfig, PolicyState, desired_workers
    from worker_mesh.gpu_pool.queues import depths

    gpu = settings.gpu
    windows = Windows.parse(gpu.offpeak_windows)
    d = depths(client, keys)
    held = int(client.zcard(keys.gpu_held_order()))
    with_deadline = int(client.zcard(keys.gpu_held_due()))
    oldest = client.zrange(keys.gpu_held_order(), 0, 0, withscores=True)
    busy = busy_hosts(client, keys, now.timestamp(), settings.celery.visibility_timeout_s)
    raw_state = client.get(keys.ns("gpu", "autoscale"))
    state = PolicyState(**json.loads(raw_state)) if raw_state else PolicyState()
    last = client.get(keys.ns("gpu", "autoscale", "desired"))
    current = int(last) if last is not None else 0
    obs = observe(client, keys, gpu, now, current, len(busy))
    decision = desired_workers(obs, PolicyConfig.from_settings(gpu), state)
    return {
        "now": _iso(now),
        "held": {"items": held, "with_deadline": with_deadline,
                 "oldest_submitted_at": _iso(datetime.fromtimestamp(oldest[0][1], UTC))
                 if oldest else None},
        "window": {"open": windows.is_open(now), "next_open": _iso(windows.next_open(now)),
                   "windows": list(gpu.offpeak_windows)},
        "queues": {q: {"queued": d.queued[q], "reserved": d.reserved[q]} for q in d.queued},
        "busy_workers": sorted(busy),
        "pool": {"last_applied": current if last is not None else None,
                 "desired": decision.desired, "reason": decision.reason,
                 "min": gpu.min_workers, "max": gpu.max_workers,
                 "target_per_worker": gpu.target_per_worker},
    }


@click.group("gpu")
def gpu_group() -> None:
    """The GPU pool: deferral, releases, autoscaling, cost."""


@gpu_group.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Held items, next window, queue depths and the pool's desired size."""
    settings, client, keys = _clients()
    data = status_data(settings, client, keys, datetime.now(UTC))
    if as_json:
        emit_json(data)
        return
    w, h, p = data["window"], data["held"], data["pool"]
    click.echo(f"off-peak window: {'OPEN' if w['open'] else 'closed'}   next: {w['next_open']}"
               f"   ({', '.join(w['windows']) or 'none configured'})")
    click.echo(f"held items: {h['items']} ({h['with_deadline']} with a deadline; oldest "
               f"{h['oldest_submitted_at'] or '-'})")
    for q, v in data["queues"].items():
        click.echo(f"queue {q:<10} queued {v['queued']:>7}   reserved/unacked {v['reserved']:>5}")
    click.echo(f"busy workers: {', '.join(data['busy_workers']) or 'none'}")
    click.echo(f"pool: desired {p['desired']} (min {p['min']}, max {p['max']}, "
               f"{p['target_per_worker']}/worker) - {p['reason']}")


def _deferral(settings: Any, client: Any, keys: Any) -> Any:
    from worker_mesh.gpu_pool.deferral import CelerySender, Deferral
    from worker_mesh.workers.app import create_app

    return Deferral(client, keys, settings.gpu, CelerySender(create_app(settings)))


@gpu_group.command("release")
@json_option
def release_cmd(as_json: bool) -> None:
    """Release every held item to gpu-batch now."""
    settings, client, keys = _clients()
    n = _deferral(settings, client, keys).release_all()
    if as_json:
        emit_json({"released": n})
    else:
        click.echo(f"released {n} held item(s) to gpu-batch")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@gpu_group.command("releaser")
@click.option("--interval", "interval_s", type=float, default=None,
              help="Seconds between ticks (default: gpu.release_interval_s).")
def releaser_cmd(interval_s: float | None) -> None:
    """Release held work when a window opens or a deadline nears, until SIGTERM."""
    from worker_mesh.gpu_pool.deferral import run_releaser

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings, client, keys = _clients()
    stop = _stop_on_signals()
    n = run_releaser(_deferral(settings, client, keys), interval_s=interval_s, stop=stop,
                     sleep=stop.wait)
    click.echo(f"releaser stopped; released {n} item(s)")


@gpu_group.command("autoscale")
@click.option("--once", is_flag=True, help="One tick, print it, exit 1 on error.")
@click.option("--dry-run", is_flag=True, help="Ask the API server for a dry run (no change).")
@click.option("--api-host", default=None,
              help="API server URL (e.g. http://127.0.0.1:8001 via `kubectl proxy`); "
                   "default: in-cluster config, else kubeconfig.")
@json_option
def autoscale_cmd(once: bool, dry_run: bool, api_host: str | None, as_json: bool) -> None:
    """Scale the GPU Deployment from the pool policy (clusters without KEDA)."""
    from worker_mesh.gpu_pool.controller import Controller, TickResult, api_client_from_env

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings, client, keys = _clients()
    ctl = Controller(api_client_from_env(api_host), client, keys, settings.gpu, dry_run=dry_run,
                     stale_busy_s=settings.celery.visibility_timeout_s)

    def show(res: TickResult) -> None:
        if as_json:
            click.echo(json.dumps(res.as_dict(), sort_keys=True))
        elif res.error:
            click.echo(f"error: {res.error}", err=True)
        else:
            click.echo(f"{time.strftime('%H:%M:%S')} replicas {res.current} -> {res.desired}"
                       f"{' (applied)' if res.applied else ''}: {res.reason}")

    if once:
        res = ctl.run(max_ticks=1, on_tick=show)[0]
        raise SystemExit(1 if res.error else 0)
    stop = _stop_on_signals()
    ctl.run(stop=stop, sleep=stop.wait, on_tick=show)


@gpu_group.command("cost")
@click.option("--peak-price", type=float, required=True, help="Price of one peak GPU-second.")
@click.option("--offpeak-price", type=float, required=True,
              help="Price of one off-peak GPU-second.")
@json_option
def cost_cmd(peak_price: float, offpeak_price: float, as_json: bool) -> None:
    """Recorded GPU-seconds priced at the prices given, with deferral against without.

    The figure is busy GPU-seconds only: GPUs are billed per node-hour, idle and boot
    included, so this is not a bill. For node-hours and what each pool strategy would
    cost, run `mesh gpu simulate` (on a trace from `mesh gpu trace record`)."""
    from worker_mesh.gpu_pool.cost import report

    _, client, keys = _clients()
    data = report(client, keys, peak_price=peak_price, offpeak_price=offpeak_price).as_dict()
    data["what"] = ("recorded busy GPU-seconds priced at the given per-second prices; "
                    "not node-hours (idle and boot are billed too): see `mesh gpu simulate`")
    if as_json:
        emit_json(data)
        return
    click.echo("recorded busy GPU-seconds at the prices given (not node-hours: idle and boot "
               "time are not in it; see `mesh gpu simulate`)")
    for t in data["by_task_type"]:
        click.echo(f"{t['task_type']:<12} peak {t['peak_s']:>10.2f}s  off-peak {t['offpeak_s']:>10.2f}s"
                   f"  (deferred {t['deferred_s']:.2f}s)")
    click.echo(f"with deferral: {data['with_deferral']:.4f}   without: {data['without_deferral']:.4f}"
               f"   saved: {data['saved']:.4f} ({data['saved_pct']}%)")


@gpu_group.group("trace")
def trace_group() -> None:
    """GPU workload traces (JSON lines) for `mesh gpu simulate`."""


@trace_group.command("record")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Trace file to write (JSON lines; appended to as it records).")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Seconds to record (default: until SIGINT/SIGTERM).")
@click.option("--bucket", "bucket_s", type=float, default=1.0, show_default=True,
              help="Seconds of sends aggregated into one line per task type and queue.")
def trace_record_cmd(out_path: str, duration_s: float | None, bucket_s: float) -> None:
    """Record what the running mesh submits to the GPU queues (Celery task-sent events
    plus the deferral's held set; see gpu_pool/sim/recorder.py)."""
    from worker_mesh.gpu_pool.sim import recorder, trace
    from worker_mesh.workers.app import create_app

    settings, client, keys = _clients()
    app = create_app(settings)
    stop = _stop_on_signals()
    if duration_s is not None:
        threading.Timer(duration_s, stop.set).start()
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"meta": {"recorder": "mesh gpu trace record",
                                      "started": _iso(datetime.now(UTC))}}) + "\n")

        def write(lines: list[Any]) -> None:
            fh.writelines(line + "\n" for line in trace.dump_lines(lines))
            fh.flush()

        rec = recorder.record(app, client, keys, write, stop=stop, bucket_s=bucket_s)
    click.echo(f"recorded to {out_path}: " + ", ".join(
        f"{k} {v}" for k, v in sorted(rec.counts.items())), err=True)


@trace_group.command("generate")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Trace file to write (.jsonl, or .jsonl.gz).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a generator parameter (see gpu_pool/sim/generator.py).")
def trace_generate_cmd(out_path: str, params: tuple[str, ...]) -> None:
    """Write the seeded SaaS week (the default trace) or a variant of it."""
    from worker_mesh.gpu_pool.sim import generator, trace

    try:
        p = generator.GeneratorParams().with_overrides(list(params))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from exc
    records = generator.generate(p)
    trace.write(out_path, records, generator.meta(p))
    click.echo(f"wrote {len(records)} lines to {out_path}", err=True)


@gpu_group.command("simulate")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Trace (JSON lines, .gz ok); default: the shipped SaaS week.")
@click.option("--prices", "prices_path", type=click.Path(dir_okay=False), default=None,
              help="Price table JSON (on_demand_per_node_h, offpeak_per_node_h, currency).")
@click.option("--node-model", "node_path", type=click.Path(dir_okay=False), default=None,
              help="Node model JSON (boot_s, throughput curves, billing); default: shipped.")
@click.option("--bench", "bench_path", type=click.Path(dir_okay=False), default=None,
              help="A bench_gpu_batching JSON whose wall medians replace the embed curve "
                   "(e.g. one measured on a GPU).")
@click.option("--urgent-sla-s", type=float, default=None,
              help="Urgent p99 queueing SLA in seconds (default 60).")
@click.option("--sensitivity", is_flag=True,
              help="Add the sensitivity table (boot time, price ratio, bulk share; ~30 s more).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: nodes and queue depth over time, cost per strategy.")
@json_option
def simulate_cmd(trace_path: str | None, prices_path: str | None, node_path: str | None,
                 bench_path: str | None, urgent_sla_s: float | None, sensitivity: bool,
                 plot_path: str | None, as_json: bool) -> None:
    """Simulate four GPU pool strategies on a trace, with the real pool policy,
    off-peak windows, deferral and batch settings (settings group `gpu`)."""
    from worker_mesh.gpu_pool.sim.report import URGENT_SLA_P99_S
    from worker_mesh.gpu_pool.sim.simulate import load_inputs, render, simulate

    settings = load_settings()
    inp = load_inputs(settings.gpu, trace_path=trace_path, prices_path=prices_path,
                      node_path=node_path, bench_path=bench_path,
                      urgent_sla_p99_s=urgent_sla_s or URGENT_SLA_P99_S)
    data = simulate(inp, plot_path=plot_path, sensitivity=sensitivity)
    if as_json:
        emit_json(data)
        return
    for line in render(data):
        click.echo(line)


COMMANDS = [gpu_group]
