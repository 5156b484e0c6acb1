"""Batch rescoring of every customer with the promoted model: a chord over shards.

Started after a promotion (``chains.retrain``, ``mesh models promote``) and by
``mesh models rescore``; no stream event starts it (the catalog has no rescoring
event). The builder splits the customer index into id ranges of
``workflows.churn_shard_size`` customers; each range is one ``mesh.churn.rescore_shard``
task of the GPU-bulk class (``gpu-batch`` queue: bulk work that may wait for off-peak
capacity). The body totals the shards; a shard that fails for good makes the chord fail,
and ``link_error`` hands that failure to ``mesh.churn.rescore_failed``, which records it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from celery import chord
from celery.exceptions import CPendingDeprecationWarning

from worker_mesh.chains.registry import REGISTRY, RunContext
from worker_mesh.events.base import Envelope

if TYPE_CHECKING:
    from celery.canvas import Signature

VERSION = "1"
WORKFLOW = "churn-rescore"


@REGISTRY.workflow(WORKFLOW, on=[], version=VERSION, sla_s=30 * 86400)
def build(env: Envelope, ctx: RunContext) -> Signature:
    """Rescore all customers with the promoted churn model (chord over shards)."""
    from worker_mesh.workers.runtime import runtime_for
    from worker_mesh.workers.stores.profiles import ProfileStore

    rt = runtime_for(ctx.app)
    bounds = ProfileStore(rt.redis, rt.keys).shard_bounds(rt.settings.workflows.churn_shard_size)
    body = ctx.sig("mesh.churn.rescore_done", ctx.meta, step="done")
    if not bounds:
        return ctx.sig("mesh.churn.rescore_done", [], ctx.meta, step="done")
    header = [ctx.sig("mesh.churn.rescore_shard", ctx.meta, lo, hi, env.event_id, step=f"shard-{i}")
              for i, (lo, hi) in enumerate(bounds)]
    failed = ctx.sig("mesh.churn.rescore_failed", ctx.meta, step="failed")
    for i, part in enumerate(header):
        # On each header task too (what ``task_allow_error_cb_on_chord_header`` will make
        # the default): a failing shard is reported as soon as it fails, and this link
        # survives the starter appending ``mesh.run.finished`` (``chord | task`` rebuilds
        # the body as a chain, whose own options do not carry the body's errbacks).
        part.link_error(ctx.sig("mesh.churn.rescore_failed", ctx.meta, step=f"shard-{i}-failed"))
    canvas = chord(header, body)
    with warnings.catch_warnings():  # Celery's notice about that future default
        warnings.simplefilter("ignore", CPendingDeprecationWarning)
        canvas.link_error(failed)
    return canvas
