"""``FlowControl``: the one object a step (or a task wrapper) talks to.

Two calls cover a step::

    admission = flow.enter(spec_flow, args, step_id=task_id)   # or raises Throttled
    try:
        result = fn(...)            # may call report_usage(tokens=...) after its API call
    finally:
        admission.close()           # releases concurrency slots (success, failure, retry)

and the caller turns ``Throttled`` into a reschedule (``workers.flowctl.reschedule``),
so a waiting step never holds a worker slot. A step that makes several calls of its own
(the content generator's attempt loop) asks per call with ``permit(...)``.

Observation is injected (``Observer``): the mesh layer knows nothing of Prometheus.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from worker_mesh.mesh.errors import Throttled
from worker_mesh.mesh.flow.concurrency import ConcurrencyLimiter, Lease
from worker_mesh.mesh.flow.declare import Args, Flow, Priority, resolve
from worker_mesh.mesh.flow.limits import Permit, RateLimiter, Wait
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings.flow import FlowSettings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Hooks for metrics; every method must be cheap and never raise."""

    def admitted(self, kind: str, name: str, priority: Priority, waited_s: float) -> None: ...

    def throttled(self, kind: str, name: str, priority: Priority, delay_s: float) -> None: ...

    def paused(self, resource: str, delay_s: float) -> None: ...

    def tokens(self, resource: str, estimated: int, actual: int) -> None: ...


class NullObserver:
    def admitted(self, kind: str, name: str, priority: Priority, waited_s: float) -> None:
        pass

    def throttled(self, kind: str, name: str, priority: Priority, delay_s: float) -> None:
        pass

    def paused(self, resource: str, delay_s: float) -> None:
        pass

    def tokens(self, resource: str, estimated: int, actual: int) -> None:
        pass


_current: contextvars.ContextVar[Admission | None] = contextvars.ContextVar(
    "mesh_flow_admission", default=None)


@dataclass
class Admission:
    """What a step holds while it runs: rate permits and concurrency leases."""

    permits: list[Permit] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    observer: Observer = field(default_factory=NullObserver)
    _token: contextvars.Token[Admission | None] | None = None

    def report_usage(self, tokens: int, resource: str | None = None) -> None:
        """The real tokens the call used (the provider's ``usage``)."""
        for p in self.permits:
            if resource is None or p.resource == resource:
                self.observer.tokens(p.resource, p.tokens, tokens)
                p.reconcile(tokens)

    def close(self) -> None:
        """Release the concurrency slots; permits keep whatever they were reconciled
        to (an unreported call keeps its estimate: the conservative choice)."""
        for lease in self.leases:
            try:
                lease.release()
            except Exception:  # expiry frees it anyway; never mask the step's outcome
                log.warning("releasing lease %s/%s failed; it expires by itself",
                            lease.name, lease.key, exc_info=True)
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def report_usage(tokens: int, resource: str | None = None) -> bool:
    """From inside a step admitted by ``FlowControl.enter``: the call's real token
    usage. Returns False when no admission is active (nothing to reconcile)."""
    adm = _current.get()
    if adm is None:
        return False
    adm.report_usage(tokens, resource)
    return True


class FlowControl:
    def __init__(self, client: redis.Redis, keys: Keys, settings: FlowSettings,
                 observer: Observer | None = None) -> None:
        self.settings = settings
        self.rates = RateLimiter(client, keys, settings)
        self.leases = ConcurrencyLimiter(client, keys, settings)
        self.observer: Observer = observer or NullObserver()

    def limited(self, flow: Flow) -> bool:
        """Whether any declaration of ``flow`` has a budget in the settings."""
        return (any(self.rates.spec(lim.resource) for lim in flow.limits)
                or any(self.leases.limit(c.name, c.limit) for c in flow.concurrency))

    def enter(self, flow: Flow, args: Args, *, step_id: str) -> Admission:
        """Admit the step now (leases first, then rate permits) or raise ``Throttled``
        with the longest wait; nothing is held while waiting."""
        adm = Admission(observer=self.observer)
        if not self.limited(flow):
            return adm
        tenant = str(resolve(flow.tenant, args) or "default")
        priority = Priority.parse(resolve(flow.priority, args))
        try:
            for c in flow.concurrency:
                key: str | None = resolve(c.key, args)  # type: ignore[arg-type]
                if key is None:
                    continue
                got = self.lease(c.name, str(key), step_id, limit=c.limit, priority=priority)
                adm.leases.append(got)
            for lim in flow.limits:
                adm.permits.append(self.permit(
                    lim.resource, ticket=step_id, requests=lim.requests,
                    tokens=int(resolve(lim.tokens, args)), tenant=tenant, priority=priority))
        except BaseException:
            for p in adm.permits:
                p.cancel()
            adm.close()
            raise
        adm._token = _current.set(adm)
        return adm

    def lease(self, name: str, key: str, holder: str, *, limit: int | None = None,
              priority: Priority = Priority.NORMAL) -> Lease:
        """A concurrency slot, kept alive while held, or ``Throttled``."""
        got = self.leases.acquire(name, key, holder, limit=limit)
        if isinstance(got, Wait):
            self.observer.throttled("concurrency", name, priority, got.delay_s)
            raise Throttled(f"concurrency {name}: key busy, {got.ahead} ahead; "
                            f"again in {got.delay_s:.2f} s", delay_s=got.delay_s, what=name)
        if got._owner is not None:
            self.observer.admitted("concurrency", name, priority, got.waited_s)
            got.keepalive(self.settings.lease_s / 3)
        return got

    def permit(self, resource: str, *, ticket: str, requests: int = 1, tokens: int = 0,
               tenant: str = "default", priority: Priority = Priority.NORMAL) -> Permit:
        """A rate permit for one call, or ``Throttled`` (the resource's turn is later)."""
        got = self.rates.acquire(resource, ticket=ticket, requests=requests, tokens=tokens,
                                 tenant=tenant, priority=priority)
        if isinstance(got, Wait):
            self.observer.throttled("rate", resource, priority, got.delay_s)
            raise Throttled(f"rate limit {resource}: {got.ahead} ahead; again in "
                            f"{got.delay_s:.2f} s", delay_s=got.delay_s, what=resource)
        if got._limiter is not None:
            self.observer.admitted("rate", resource, priority, got.waited_s)
        return got

    def pause(self, resource: str, delay_s: float) -> float:
        """A 429 with ``Retry-After``: pause ``resource`` for every worker."""
        paused = self.rates.pause(resource, delay_s)
        self.observer.paused(resource, paused)
        return paused
