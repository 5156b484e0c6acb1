"""Logging a dependency's outage once per change of state, not once per retry.

A loop that retries Redis every few hundred milliseconds would otherwise write a line
per attempt for as long as the outage lasts (and page whoever greps for errors each
time). ``OutageLog`` writes one warning when the dependency goes away (with the reason),
one when the reason changes, and one info line when it is back (with how long it was
gone); the attempts in between go to DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OutageLog:
    """State-change logging for one dependency of one loop (not thread-safe: one per loop)."""

    def __init__(self, logger: logging.Logger, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._what = what
        self._clock = clock
        self._since: float | None = None
        self._reason = ""

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: BaseException | str, retry_in_s: float | None = None) -> None:
        """Record a failed attempt; logs only when the state or the reason changes."""
        text = _reason(reason).rstrip(". ")
        retry = "" if retry_in_s is None else f"; retrying with backoff (next in {retry_in_s:.1f}s)"
        if self._since is None:
            self._since = self._clock()
            self._reason = text
            self._log.warning("%s unavailable: %s%s", self._what, text, retry)
        elif text != self._reason:
            self._reason = text
            self._log.warning("%s still unavailable, now: %s%s", self._what, text, retry)
        else:
            self._log.debug("%s still unavailable: %s", self._what, text)

    def ok(self) -> None:
        """Record a successful attempt; logs once when the dependency is back."""
        if self._since is not None:
            gone = self._clock() - self._since
            self._since = None
            self._reason = ""
            self._log.info("%s available again after %.1fs", self._what, gone)


def _reason(reason: BaseException | str) -> str:
    if isinstance(reason, str):
        return reason
    import redis

    if isinstance(reason, redis.RedisError):
        from worker_mesh.mesh.redis_conn import describe_error

        return describe_error(reason)
    return str(reason) or type(reason).__name__
