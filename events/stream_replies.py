"""Stream replies as the dispatcher reads them: XREADGROUP / XAUTOCLAIM parsed so that a
field an entry repeats with a different value is noted (``events.wire.REPEATED``) instead
of silently keeping one value (Redis streams allow repeated fields; a dict keeps one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker_mesh.events.wire import REPEATED

__all__ = ["entries_keeping_repeats"]


def _fields(flat: list[Any] | None) -> dict[bytes, bytes] | None:
    """A stream entry's flat field list as a dict that, unlike redis-py's, notes a field
    repeated with a different value (``events.wire.REPEATED``) instead of keeping one."""
    if flat is None:
        return None
    out: dict[bytes, bytes] = {}
    for i in range(0, len(flat) - 1, 2):
        k, v = flat[i], flat[i + 1]
        if k in out and out[k] != v:
            out.setdefault(REPEATED, k)
        out[k] = v
    return out


def entries_keeping_repeats(command: str) -> Callable[..., Any]:
    """Response parser of XREADGROUP / XAUTOCLAIM built on ``_fields``, giving the
    legacy RESP2 shapes (what redis-py gives by default) from either wire protocol."""

    def entries(rows: list[Any] | None) -> list[Any] | None:
        if rows is None:
            return None
        return [(r[0], _fields(r[1])) if r is not None else (None, None) for r in rows]

    def xreadgroup(response: Any, **_: Any) -> Any:
        if not response:
            return []
        items = response.items() if isinstance(response, dict) else response  # RESP3 / RESP2 wire
        return [[stream, entries(rows)] for stream, rows in items]

    def xautoclaim(response: Any, **options: Any) -> Any:
        if options.get("parse_justid", False):
            return response[1]
        response[1] = entries(response[1])
        return response

    return xreadgroup if command == "XREADGROUP" else xautoclaim
