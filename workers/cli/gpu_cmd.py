"""`mesh gpu status|release|releaser|autoscale|cost`: operate the GPU pool.

- ``status``: held bulk items, the next off-peak window, GPU queue depths (queued and
  reserved/unacked), busy workers and the pool's desired size from the policy.
- ``release``: send everything held to ``gpu-batch`` now (operator override).
- ``releaser``: the loop that releases held work when a window opens or a deadline
  nears (alternatively beat runs ``mesh.gpu.release_due``).
- ``autoscale``: the controller for clusters without KEDA (``--once`` for one tick).
- ``cost``: the recorded GPU workload priced with deferral against without it.
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

from workers.cli._common import emit_json, json_option, load_settings


def _clients() -> tuple[Any, Any, Any]:
    from mesh.keys import Keys
    from mesh.redis_conn import make_client

    settings = load_settings()
    return settings, make_client(settings.redis), Keys(settings.redis.key_prefix)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat(timespec="seconds")


def status_data(settings: Any, client: Any, keys: Any, now: datetime) -> dict[str, Any]:
    """Everything ``mesh gpu status`` shows, as plain data."""
    from gpu_pool.controller import busy_hosts, observe
    from gpu_pool.offpeak import Windows
    from gpu_pool.policy import PolicyConfig, PolicyState, desired_workers
    from gpu_pool.queues import depths

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
    from gpu_pool.deferral import CelerySender, Deferral
    from workers.app import create_app

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
    from gpu_pool.deferral import run_releaser

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
    from gpu_pool.controller import Controller, TickResult, api_client_from_env

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
    """What the recorded GPU workload cost with deferral against without it."""
    from gpu_pool.cost import report

    _, client, keys = _clients()
    data = report(client, keys, peak_price=peak_price, offpeak_price=offpeak_price).as_dict()
    if as_json:
        emit_json(data)
        return
    for t in data["by_task_type"]:
        click.echo(f"{t['task_type']:<12} peak {t['peak_s']:>10.2f}s  off-peak {t['offpeak_s']:>10.2f}s"
                   f"  (deferred {t['deferred_s']:.2f}s)")
    click.echo(f"with deferral: {data['with_deferral']:.4f}   without: {data['without_deferral']:.4f}"
               f"   saved: {data['saved']:.4f} ({data['saved_pct']}%)")


COMMANDS = [gpu_group]
