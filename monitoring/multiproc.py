"""Serving /metrics, and prometheus-client's multiprocess mode for prefork workers.

A prefork Celery worker runs tasks in child processes; each child has its own memory,
so in-memory metrics would be lost or reported by whichever child answered. In
multiprocess mode every process writes its samples to mmap files in
``PROMETHEUS_MULTIPROC_DIR`` and the parent's /metrics sums them (``MultiProcessCollector``),
so nothing is lost when a child exits either (counters of dead children stay summed;
``live*`` gauges drop them via ``mark_dead``).

``enable(dir)`` must run in the parent before the pool forks. It also works when
prometheus-client was already imported (the CLI imports modules eagerly): the value class
is swapped, and metrics without labels (whose values exist already) are re-initialised.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable(directory: str | os.PathLike[str] | None = None, *, clean: bool = True) -> Path:
    """Switch this process (and the children it forks) to multiprocess metrics.

    ``directory`` defaults to ``$PROMETHEUS_MULTIPROC_DIR`` when set (e.g. an emptyDir
    volume), else to a new temp folder removed when this process exits;
    ``clean`` empties a given folder first (files of an earlier run would otherwise be
    summed in), so a folder must not be shared by two live workers.
    """
    directory = directory or os.environ.get(ENV) or None
    if directory:
        path = Path(directory)
        if clean and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="mesh-metrics-"))
        owner = os.getpid()

        def _cleanup() -> None:  # forked children inherit atexit handlers: owner only
            if os.getpid() == owner:
                shutil.rmtree(path, ignore_errors=True)

        atexit.register(_cleanup)
    os.environ[ENV] = str(path)
    from prometheus_client import REGISTRY, values

    values.ValueClass = values.get_value_class()
    for collector in list(REGISTRY._collector_to_names):
        # An unlabelled metric built its value objects at import; rebuild them so they
        # write to the shared files too. Labelled ones build children lazily.
        if getattr(collector, "_labelnames", None) == () and hasattr(collector, "_metric_init"):
            collector._metric_init()
    return path


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def mark_dead(pid: int) -> None:
    """A pool child exited: drop its ``live*`` gauge files (counters stay summed)."""
    if not enabled():
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:  # pragma: no cover
        log.debug("mark_process_dead failed", exc_info=True)


def registry() -> Any:
    """The registry /metrics serves: the multiprocess aggregate when enabled, else the
    process's default registry."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not enabled():
        return REGISTRY
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


def serve(port: int, addr: str = "127.0.0.1", extra: list[Any] | None = None) -> Any:
    """Serve /metrics on ``addr:port`` in a daemon thread (0: do nothing). Loopback
    unless told otherwise (``monitoring.metrics_address``: closed by default). ``extra``
    collectors (the Redis collector of ``mesh exporter``) are added to what is served.
    Returns the server (``.shutdown()``) or None."""
    if not port:
        return None
    from prometheus_client import start_http_server

    reg = registry()
    for c in extra or []:
        reg.register(c)
    server, _thread = start_http_server(port, addr=addr, registry=reg)
    log.info("serving /metrics on %s:%d", addr, port)
    return server
