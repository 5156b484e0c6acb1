"""Flow-control state for ``mesh exporter`` (read from Redis at scrape time):

==========================================  ===============================================
``mesh_ratelimit_window_requests{name}``    requests admitted in the current window
``mesh_ratelimit_window_tokens{name}``      tokens in the window (estimates until reconciled)
``mesh_ratelimit_limit_requests{name}``     the declared budgets (absent when not limited)
``mesh_ratelimit_limit_tokens{name}``
``mesh_ratelimit_paused_seconds{name}``     time left of a 429 pause
``mesh_ratelimit_waiting_steps{kind,name}`` steps waiting now (kind: rate, concurrency)
``mesh_ratelimit_oldest_wait_seconds{...}`` how long the longest-waiting step has waited
``mesh_ratelimit_wait_sla_seconds{...}``    its allowed wait (alert MeshFlowWaitOverSla)
``mesh_concurrency_running{name}``          steps holding a slot, over all keys
==========================================  ===============================================

The worker-side counters and the wait histogram (``mesh_ratelimit_wait_seconds``,
``_throttled_total``, ``_admitted_total``, ``_paused_total``, ``_tokens_total``) come
from the workers' own /metrics (``monitoring.metrics``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


def flow_families(client: Any, settings: Any) -> Iterator[Any]:
    if not settings.flow.limits and not settings.flow.concurrency:
        return
    from worker_mesh.mesh.flow.status import snapshot
    from worker_mesh.mesh.keys import Keys

    try:
        snap = snapshot(client, Keys(settings.redis.key_prefix), settings.flow)
    except Exception as exc:  # the rest of the scrape still counts
        log.warning("flow-control state unreadable: %s", exc)
        return
    g = {n: GaugeMetricFamily(f"mesh_ratelimit_{n}", doc, labels=["name"]) for n, doc in (
        ("window_requests", "Requests admitted in the current window."),
        ("window_tokens", "Tokens in the current window (estimates until reconciled)."),
        ("limit_requests", "Declared requests per interval."),
        ("limit_tokens", "Declared tokens per interval."),
        ("paused_seconds", "Time left of a 429 pause of the resource."))}
    waiting = GaugeMetricFamily("mesh_ratelimit_waiting_steps", "Steps waiting for the limit.",
                                labels=["kind", "name"])
    oldest = GaugeMetricFamily("mesh_ratelimit_oldest_wait_seconds",
                               "How long the longest-waiting step has waited.",
                               labels=["kind", "name"])
    sla = GaugeMetricFamily("mesh_ratelimit_wait_sla_seconds",
                            "The longest wait the limit's SLA allows.", labels=["kind", "name"])
    running = GaugeMetricFamily("mesh_concurrency_running",
                                "Steps holding a concurrency slot, over all keys.", labels=["name"])
    for x in snap["limits"]:
        name = x["resource"]
        g["window_requests"].add_metric([name], x["window_requests"])
        g["window_tokens"].add_metric([name], x["window_tokens"])
        if x["limit_requests"]:
            g["limit_requests"].add_metric([name], x["limit_requests"])
        if x["limit_tokens"]:
            g["limit_tokens"].add_metric([name], x["limit_tokens"])
        g["paused_seconds"].add_metric([name], x["paused_s"])
        for fam, v in ((waiting, x["waiting"]), (oldest, x["oldest_wait_s"]),
                       (sla, x["wait_sla_s"])):
            fam.add_metric(["rate", name], v)
    for x in snap["concurrency"]:
        name = x["name"]
        running.add_metric([name], x["running"])
        for fam, v in ((waiting, x["waiting"]), (oldest, x["oldest_wait_s"]),
                       (sla, x["wait_sla_s"])):
            fam.add_metric(["concurrency", name], v)
    yield from (*g.values(), waiting, oldest, sla, running)
