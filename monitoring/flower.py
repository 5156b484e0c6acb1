"""Flower, closed by default.

Flower shows task arguments and results and can revoke tasks or shut workers down, so
`mesh flower` refuses to start without credentials unless told ``--no-auth``:

* credentials come from ``monitoring.flower_basic_auth`` (``user:password``, several
  comma-separated) or ``monitoring.flower_basic_auth_file`` (one ``user:password`` per
  line: a mounted Secret), never from the command line, where ``ps`` (``/proc/*/cmdline``)
  shows them to every local user; Flower options that carry secrets are refused there;
* they are handed to Flower inside this process (Flower runs in it), so they appear in
  no command line and no environment variable;
* Flower's own ``/metrics`` answers without auth even with ``--basic_auth`` (flower
  2.2); ``protect_metrics`` makes it require the same credentials as the UI and API.
  ``/healthcheck`` stays open (the Kubernetes probes; it says only "OK").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.extras import require
from worker_mesh.mesh.settings import MonitoringSettings

SECRET_OPTIONS = ("basic_auth", "basic-auth", "oauth2_secret", "oauth2-secret",
                  "cookie_secret", "cookie-secret")
"""Flower options that carry a secret: refused on the command line."""


def credentials(mon: MonitoringSettings) -> list[str]:
    """The ``user:password`` pairs from the setting and the file (may be empty)."""
    pairs: list[str] = []
    if mon.flower_basic_auth is not None:
        pairs += [p.strip() for p in mon.flower_basic_auth.get_secret_value().split(",")]
    if mon.flower_basic_auth_file:
        path = Path(mon.flower_basic_auth_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"monitoring.flower_basic_auth_file: cannot read {path} "
                              f"({exc.strerror})") from None
        pairs += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for i, pair in enumerate(pairs, 1):
        user, sep, password = pair.partition(":")
        if not (sep and user and password):
            raise ConfigError(f"Flower credential #{i} is not user:password (from "
                              "MESH_MONITORING_FLOWER_BASIC_AUTH or its _FILE)")
        if "," in pair:
            raise ConfigError(f"Flower credential #{i} contains a comma (Flower splits on it)")
    return pairs


def refuse_secret_options(args: tuple[str, ...] | list[str]) -> None:
    """A secret passed to Flower on the command line is an error, not a warning."""
    for arg in args:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("--") and name in SECRET_OPTIONS:
            raise ConfigError(f"--{name} on the command line is visible in ps to every local "
                              "user: set MESH_MONITORING_FLOWER_BASIC_AUTH(_FILE) instead")


def protect_metrics() -> None:
    """Make Flower's ``/metrics`` require the UI's credentials. Idempotent."""
    import tornado.web
    require("flower", "flower")
    from flower import urls
    from flower.views import monitor

    class AuthenticatedMetrics(monitor.Metrics):  # type: ignore[misc]
        """Flower's Prometheus handler behind ``get_current_user`` (basic auth)."""

        @tornado.web.authenticated  # type: ignore[misc]
        async def get(self) -> None:
            await super().get()

    for i, handler in enumerate(urls.handlers):
        if isinstance(handler, tuple) and handler[0] == r"/metrics":
            if handler[1] is monitor.Metrics:
                urls.handlers[i] = (r"/metrics", AuthenticatedMetrics)
            return
    raise ConfigError("this Flower version has no /metrics route to protect")


def argv(port: int, address: str, pairs: list[str], extra: tuple[str, ...]) -> list[str]:
    """Flower's arguments (given to ``app.start`` in this process, not to a child)."""
    out: list[str] = ["flower", f"--port={port}", f"--address={address}", "--persistent=False"]
    if pairs:
        out.append("--basic_auth=" + ",".join(pairs))
    return [*out, *extra]


def describe(pairs: list[str], address: str, port: int) -> str:
    users = sorted({p.split(":", 1)[0] for p in pairs})
    if not users:
        return (f"mesh flower on {address}:{port}: NO AUTHENTICATION (--no-auth): UI, API "
                "and /metrics are open to whoever reaches the port")
    return (f"mesh flower on {address}:{port}: basic auth ({', '.join(users)}) on the UI, "
            "the API and /metrics")


def start(app: Any, port: int, address: str, pairs: list[str], extra: tuple[str, ...]) -> None:
    protect_metrics()
    app.start(argv(port, address, pairs, extra))
