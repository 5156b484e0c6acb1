"""Which step of which run is executing in this thread: set by the worker's task hooks
(``workers.run_hooks``), read by the result stores so every record they write names
the step that wrote it (lineage: event -> run -> workflow@version -> step -> model
version -> record). A context variable: correct in prefork and thread pools alike."""

from __future__ import annotations

from contextvars import ContextVar, Token

__all__ = ["enter", "leave", "step_of"]

_CURRENT: ContextVar[tuple[str, str] | None] = ContextVar("mesh_current_step", default=None)


def enter(run_id: str, step: str) -> Token[tuple[str, str] | None]:
    return _CURRENT.set((run_id, step))


def leave(token: Token[tuple[str, str] | None]) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:  # reset from another context: just clear it
        _CURRENT.set(None)


def step_of(run_id: str) -> str:
    """The step of ``run_id`` running in this thread, or '' (called outside a step, or
    for another run)."""
    cur = _CURRENT.get()
    return cur[1] if cur is not None and cur[0] == run_id else ""
