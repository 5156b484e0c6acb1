"""Cluster-wide rate limits: requests and tokens per sliding interval, shared by every
worker through Redis.

``RateLimiter.acquire`` answers at once, never blocks: a ``Permit`` (call now) or a
``Wait`` (ask again in ``delay_s``; the caller reschedules its step instead of holding
a worker slot). After the call, ``Permit.reconcile(tokens)`` replaces the token estimate
with the usage the provider reported, so an estimate (prompt + ``max_tokens``) only
weighs on the budget while the call runs. A 429 calls ``pause``: nobody calls the
resource before the provider's ``Retry-After``.

What it guarantees (the argument in docs/flow-control.md): admissions in any window of
``interval_s + clock_margin_s`` stay within the budget (tokens counted at their
estimate until reconciled), so a provider counting over ``interval_s`` never sees more
than its limit as long as calls reach it within ``clock_margin_s`` of their admission
and the real usage does not exceed the estimate.

Waiting steps stand in one line per resource: urgent before normal before bulk, and
within a priority, weighted fair queueing over the tenant (a tenant's burst does not
starve the others). Each waiting step is told when its turn is expected (its place in
line times the budget's pace), so the line is not re-polled by a thundering herd.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker_mesh.mesh.errors import PermanentError
from worker_mesh.mesh.flow import lua
from worker_mesh.mesh.flow.declare import Priority
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings.flow import FlowSettings, LimitSpec

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wait:
    """Not now: ask again in ``delay_s`` (the expected turn, not a poll interval)."""

    delay_s: float
    what: str
    """The resource or concurrency key that said no (logs, metrics)."""
    ahead: int = 0
    """Waiting steps ahead of this one."""
    waited_s: float = 0.0
    """How long this step has waited so far (since its first refusal)."""


@dataclass
class Permit:
    """Admission to call ``resource`` now. ``reconcile`` (with the real usage) or
    ``cancel`` (the call was not made) it once; a permit left alone keeps its estimate."""

    resource: str
    permit_id: str
    tokens: int
    waited_s: float
    _limiter: RateLimiter | None = field(default=None, repr=False)
    settled: bool = False

    def reconcile(self, actual_tokens: int) -> None:
        if self._limiter is not None and not self.settled:
            self._limiter.reconcile(self, actual_tokens)
        self.settled = True

    def cancel(self) -> None:
        if self._limiter is not None and not self.settled:
            self._limiter.cancel(self)
        self.settled = True


def tag_for(keys: Keys, kind: str, name: str) -> str:
    """The hash tag of one resource's keys (one Redis Cluster slot)."""
    return f"{{{keys.prefix}:{kind}:{name}}}"


class RateLimiter:
    """The limits declared in ``FlowSettings.limits``; undeclared resources are
    unlimited (admitted without a Redis round trip)."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: FlowSettings) -> None:
        self._r = client
        self._keys = keys
        self._s = settings
        self._acquire = client.register_script(lua.ACQUIRE)
        self._reconcile = client.register_script(lua.RECONCILE)
        self._cancel = client.register_script(lua.CANCEL)
        self._pause = client.register_script(lua.PAUSE)
        self._status = client.register_script(lua.STATUS)

    def spec(self, resource: str) -> LimitSpec | None:
        return self._s.limits.get(resource)

    def window_s(self, spec: LimitSpec) -> float:
        return spec.interval_s + self._s.clock_margin_s

    def _k(self, resource: str, *names: str) -> list[str]:
        tag = tag_for(self._keys, "flow", resource)
        return [f"{tag}:{n}" for n in names]

    def acquire(self, resource: str, *, ticket: str, requests: int = 1, tokens: int = 0,
                tenant: str = "default", priority: Priority = Priority.NORMAL,
                now: float | None = None) -> Permit | Wait:
        """A permit to call ``resource`` now, or how long to wait for one.

        ``ticket`` names the waiting step (stable across its reschedules: the Celery
        task id), so it keeps its place in line; ``tokens`` is the estimate (prompt +
        max output tokens) reconciled after the call.
        """
        spec = self.spec(resource)
        permit_id = uuid.uuid4().hex
        if spec is None:
            return Permit(resource, permit_id, tokens, 0.0)
        self._check_fits(resource, spec, requests, tokens)
        keys = self._k(resource, "log", "cost", "state", "queue", "deadline", "since", "vt",
                       f"t:{ticket}")
        args: list[str | int | float] = ["" if now is None else repr(now), permit_id, ticket, tenant,
                self._s.weight(tenant), int(priority), int(requests), int(tokens),
                spec.requests_per_interval or 0, spec.tokens_per_interval or 0,
                self.window_s(spec), self._s.ticket_grace_s, self._s.ticket_ttl_s,
                max(int(tokens), 1), self._s.min_wait_s, self._s.burst_fraction]
        with translate_errors(f"rate limit {resource}"):
            ok, a, ahead, b = self._acquire(keys=keys, args=args)
        if int(ok):
            return Permit(resource, permit_id, int(tokens), float(a), self)
        return Wait(float(a), resource, int(ahead), float(b))

    @staticmethod
    def _check_fits(resource: str, spec: LimitSpec, requests: int, tokens: int) -> None:
        if requests < 1 or tokens < 0:
            raise PermanentError(f"rate limit {resource}: requests must be >= 1 and tokens >= 0 "
                                 f"(got {requests}, {tokens})")
        if spec.requests_per_interval and requests > spec.requests_per_interval:
            raise PermanentError(f"rate limit {resource}: one step asks for {requests} requests, "
                                 f"more than the whole budget ({spec.requests_per_interval})")
        if spec.tokens_per_interval and tokens > spec.tokens_per_interval:
            raise PermanentError(f"rate limit {resource}: one step asks for {tokens} tokens, "
                                 f"more than the whole budget ({spec.tokens_per_interval})")

    def reconcile(self, permit: Permit, actual_tokens: int) -> None:
        """Replace the permit's estimate with the tokens the provider reported."""
        if self.spec(permit.resource) is None:
            return
        with translate_errors(f"rate limit {permit.resource}"):
            self._reconcile(keys=self._k(permit.resource, "cost", "state"),
                            args=[permit.permit_id, max(int(actual_tokens), 0),
                                  self._s.usage_ewma_alpha])

    def cancel(self, permit: Permit) -> None:
        """Give the budget back: the call was never made."""
        if self.spec(permit.resource) is None:
            return
        with translate_errors(f"rate limit {permit.resource}"):
            self._cancel(keys=self._k(permit.resource, "log", "cost", "state"),
                         args=[permit.permit_id])

    def pause(self, resource: str, delay_s: float, now: float | None = None) -> float:
        """The provider said 429: nobody calls ``resource`` for ``delay_s``.
        Returns how long the resource is paused from now."""
        if self.spec(resource) is None:
            return delay_s
        with translate_errors(f"rate limit {resource}"):
            out = self._pause(keys=self._k(resource, "state"),
                              args=["" if now is None else repr(now), max(delay_s, 0.0)])
        log.warning("resource %s paused for %.1f s (provider answered 429)", resource, float(out))
        return float(out)

    def status(self, resource: str, now: float | None = None) -> dict[str, float | int | str]:
        """Use of the window, waiting steps and counters of one declared resource."""
        spec = self.spec(resource)
        if spec is None:
            raise PermanentError(f"no rate limit named {resource!r} (flow.limits)")
        keys = self._k(resource, "log", "cost", "state", "queue", "deadline", "since")
        with translate_errors(f"rate limit {resource}"):
            t, waiting, oldest, raw = self._status(
                keys=keys, args=["" if now is None else repr(now), self.window_s(spec)])
        state = {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}
        t = float(t)
        paused_until = float(state.get("paused_until", 0) or 0)
        return {
            "resource": resource, "interval_s": spec.interval_s,
            "limit_requests": spec.requests_per_interval or 0,
            "limit_tokens": spec.tokens_per_interval or 0,
            "window_requests": int(float(state.get("req", 0))),
            "window_tokens": int(float(state.get("tok", 0))),
            "waiting": int(waiting),
            "oldest_wait_s": round(t - float(oldest), 3) if oldest else 0.0,
            "paused_s": round(max(paused_until - t, 0.0), 3),
            "avg_tokens": round(float(state.get("avg", 0) or 0), 1),
            "admitted": int(state.get("admitted", 0)), "throttled": int(state.get("throttled", 0)),
            "pauses": int(state.get("pauses", 0)), "wait_sla_s": spec.wait_sla_s,
        }


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
