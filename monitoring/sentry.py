"""Sentry: failed tasks and dead-lettered events, with the tags an on-call needs, and
no personal data.

``init(settings)`` (called by ``monitoring.celery_hooks.install`` when
``monitoring.sentry_dsn`` is set, so in workers, beat and dispatchers alike):

* Celery + Redis integrations. A task that is retried raises Celery's ``Retry``, which
  the Celery integration never reports, so a failure reaches Sentry once, when retries
  are exhausted (or at once for kinds that do not retry).
* Tags: ``workflow``, ``task``, ``task_kind``, ``event_type``, ``model_version``
  (set per task in ``task_prerun``, model versions from ``metrics.model_in_use``).
* Critical-kind tasks (``mesh_kind == "critical"``) are reported as ``fatal`` and flushed
  at once instead of waiting for the transport's batch.
* Dead-lettered events (``metrics.dead_lettered``) become warning events grouped by
  reason and event type, throttled per process.
* ``before_send`` scrubs every field named in ``monitoring.sentry_scrub_fields`` and every
  event-payload field marked ``json_schema_extra={"sensitive": True}``, at any depth
  (task arguments, extra, contexts, breadcrumbs); local variables are never sent; then
  every string of the event passes the redaction point (``mesh.redact``).
* Beat schedules become Sentry Cron check-ins (``monitor_beat_tasks``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from worker_mesh.mesh.extras import require

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
DLQ_REPORT_EVERY_S = 10.0
"""At most one Sentry event per (reason, event type) per process in this many seconds."""

_state: dict[str, Any] = {"enabled": False, "fields": frozenset()}
_lock = threading.Lock()
_last_dlq: dict[tuple[str, str], float] = {}


def sensitive_payload_fields() -> set[str]:
    """Names of event-payload fields marked sensitive in the catalog."""
    out: set[str] = set()
    try:
        from worker_mesh.events.catalog import CATALOG

        for cls in CATALOG.types():
            for name, f in cls.model_fields.items():
                extra = f.json_schema_extra
                if isinstance(extra, dict) and extra.get("sensitive"):
                    out.add(name)
    except Exception:  # pragma: no cover
        log.debug("catalog not readable", exc_info=True)
    return out


def scrub(value: Any, fields: frozenset[str] | set[str], depth: int = 0) -> Any:
    """A copy of ``value`` with the values of ``fields`` (case-insensitive keys)
    replaced by ``[Filtered]``, at any depth."""
    if depth > 20:
        return value
    if isinstance(value, dict):
        return {k: (FILTERED if isinstance(k, str) and k.lower() in fields
                    else scrub(v, fields, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, fields, depth + 1) for v in value]
    return value


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Scrub personal data; mask secrets (``mesh.redact``: known secrets, credentials in
    URLs, auth headers, bearer tokens, in every string of the event); tag model
    versions; mark critical tasks fatal."""
    from worker_mesh.mesh import redact

    fields = _state["fields"]
    for part in ("extra", "contexts", "request", "breadcrumbs", "user"):
        if part in event:
            event[part] = scrub(event[part], fields)
    for exc in (event.get("exception") or {}).get("values", []):
        for frame in (exc.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    tags = event.setdefault("tags", {})
    from worker_mesh.monitoring import metrics

    versions = dict(metrics._model_versions)
    if versions and "model_version" not in tags:
        tags["model_version"] = ",".join(f"{m}={v}" for m, v in sorted(versions.items()))
    if tags.get("task_kind") == "critical" and event.get("exception"):
        event["level"] = "fatal"
    return redact.value(event)  # type: ignore[no-any-return]


def _masked(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Performance events (when traces are sampled) pass the redaction point too."""
    from worker_mesh.mesh import redact

    return redact.value(event)  # type: ignore[no-any-return]


def init(settings: Any) -> bool:
    """Start the SDK for this process (once); False when no DSN is configured."""
    mon = settings.monitoring
    if mon.sentry_dsn is None:
        return False
    with _lock:
        if _state["enabled"]:
            return True
        require("sentry_sdk", "sentry")
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.integrations.redis import RedisIntegration

        _state["fields"] = frozenset(f.lower() for f in
                                     (*mon.sentry_scrub_fields, *sensitive_payload_fields()))
        sentry_sdk.init(
            dsn=mon.sentry_dsn.get_secret_value(),
            environment=mon.environment,
            include_local_variables=False,
            max_request_body_size="never",
            traces_sample_rate=mon.sentry_traces_sample_rate,
            before_send=before_send,  # type: ignore[arg-type]  # Event is a TypedDict
            before_send_transaction=_masked,  # type: ignore[arg-type]
            integrations=[
                CeleryIntegration(monitor_beat_tasks=True, propagate_traces=True),
                RedisIntegration(),
                # Error logs of Celery itself would duplicate the task's exception event.
                LoggingIntegration(event_level=None),
            ],
        )
        _state["enabled"] = True
    return True


def enabled() -> bool:
    return bool(_state["enabled"])


def task_scope(task_name: str, kind: str | None, meta: dict[str, Any], args: Iterable[Any]) -> None:
    """Tag the current (per-task) scope: called from the task_prerun hook."""
    if not _state["enabled"]:
        return
    import sentry_sdk

    scope = sentry_sdk.get_isolation_scope()
    scope.set_tag("task", task_name)
    if kind:
        scope.set_tag("task_kind", kind)
    if meta.get("workflow"):
        scope.set_tag("workflow", str(meta["workflow"]))
        scope.set_tag("workflow_version", str(meta.get("workflow_version", "")))
        scope.set_context("run", {"run_id": meta.get("run_id")})
    event_type = meta.get("event_type") or _event_type_in(args)
    if event_type:
        scope.set_tag("event_type", str(event_type))
    if meta.get("model_version"):
        scope.set_tag("model_version", str(meta["model_version"]))


def _event_type_in(args: Iterable[Any]) -> str | None:
    for a in args:
        if isinstance(a, dict):
            for key in ("event_type", "type"):
                v = a.get(key)
                if isinstance(v, str) and "." in v:
                    return v
    return None


def task_failed(kind: str | None) -> None:
    """A task failed for good: critical kinds go out now, not with the next batch."""
    if _state["enabled"] and kind == "critical":
        import sentry_sdk

        sentry_sdk.flush(timeout=5)


def dead_lettered(reason: str, event_type: str, n: int = 1) -> None:
    """Report dead-lettered events (grouped by reason and type, throttled)."""
    if not _state["enabled"]:
        return
    now = time.monotonic()
    key = (reason, event_type)
    with _lock:
        if now - _last_dlq.get(key, -1e9) < DLQ_REPORT_EVERY_S:
            return
        _last_dlq[key] = now
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("dead_letter_reason", reason)
        scope.set_tag("event_type", event_type)
        scope.set_extra("count", n)
        scope.fingerprint = ["mesh-dead-letter", reason, event_type]
        scope.level = "warning"
        sentry_sdk.capture_message(f"event dead-lettered: {reason} ({event_type})")
