"""The dispatcher: stream entries in, workflow runs out, every entry accounted for.

Per XREADGROUP batch (see docs/dispatcher.md for the crash windows)::

    decode/validate --bad--> DLQ (reason, original fields)
    route (Router)           pure CPU, before any round trip
    one pipeline:            SET dedupe NX GET (value: entry id) + EXISTS run markers
    start_many               (WorkflowStarter) runs not started before
    one MULTI per partition: run markers, coalescing holds, DLQ entries,
                             outcome counters, XACK

A redelivered entry finds its own entry id in its dedupe key (so it is not taken for
a duplicate of itself) and the run markers of the runs it already started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker_mesh.events import outcomes as oc
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CATALOG, EventCatalog
from worker_mesh.events.coalesce import CoalesceStore
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.firing import SlotFirer, entry_ms
from worker_mesh.events.routing import Route, Router, RunResender, StartRequest, WorkflowStarter
from worker_mesh.events.stream_replies import entries_keeping_repeats
from worker_mesh.events.wire import decode, original_fields
from worker_mesh.mesh.errors import InvalidEvent, PayloadTooLarge, TransientError, UnknownEventType
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.outage import OutageLog
from worker_mesh.mesh.runs import Overdue, RunLedger, redrive_overdue
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import metrics

log = logging.getLogger("mesh.dispatcher")

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
PRUNE_EVERY_S = 60.0
PRUNE_INACTIVE_S = 600.0
"""A consumer that has not read for this long, and holds nothing, is a dead dispatcher."""


@dataclass
class Entry:
    """One stream entry in hand."""

    partition: int
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1
    env: Envelope | None = None
    routes: list[Route] = field(default_factory=list)
    outcome: str | None = None
    dlq: tuple[str, str] | None = None
    """(reason_code, reason) once it is to be dead-lettered."""
    failed_workflow: str | None = None

    @property
    def type_label(self) -> str:
        return self.env.type if self.env is not None else oc.INVALID_TYPE

    @property
    def text_fields(self) -> dict[str, str]:
        return original_fields(self.fields)

    resume_of: str = ""
    """The failed run a granted replay resumes."""

    @property
    def attempt(self) -> str:
        raw = self.fields.get(b"replay")
        return raw.decode("utf-8", "replace") if raw else ""


def reason_code(exc: InvalidEvent) -> str:
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    if isinstance(exc, UnknownEventType):
        return "unknown_type"
    return "invalid"


class Dispatcher:
    """Consumes the partition streams as one member of the consumer group."""

    def __init__(self, client: redis.Redis, settings: MeshSettings, keys: Keys, router: Router,
                 starter: WorkflowStarter, *, catalog: EventCatalog = CATALOG,
                 consumer: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.r = client
        self.settings = settings
        self.d = settings.dispatcher
        self.keys = keys
        self.router = router
        self.starter = starter
        self.catalog = catalog
        self.consumer = consumer or self.d.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.clock = clock
        self.dlq = DeadLetters(client, keys, settings.streams)
        self.coalesce = CoalesceStore(client, keys)
        self.firer = SlotFirer(client, settings, keys, starter, self.dlq, self.coalesce, catalog)
        self.ledger = RunLedger(client, keys, settings.runs)
        for command in ("XREADGROUP", "XAUTOCLAIM"):  # see events.wire.REPEATED
            client.set_response_callback(command, entries_keeping_repeats(command))
        self.resender: RunResender | None = starter if hasattr(starter, "resend") else None  # type: ignore[assignment]
        self._next_redrive = 0.0
        self._next_prune = 0.0
        self.partitions = settings.streams.partitions
        self.streams = {keys.stream(p): p for p in range(self.partitions)}
        self.max_bytes = settings.streams.max_payload_bytes
        self._stop = False
        self._next_claim = 0.0
        self._next_flush = 0.0
        socket_ms = int(settings.redis.socket_timeout_s * 1000)
        # Block no longer than the socket timeout allows, nor past the next coalescing
        # tick (a due slot should not wait for a quiet stream's BLOCK to run out).
        self.block_ms = max(1, min(self.d.block_ms, self.d.coalesce_tick_ms,
                                   socket_ms - 500 if socket_ms > 1000 else 1))
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------------
    def ensure_groups(self) -> None:
        """Create the consumer group on every partition stream (from id 0, MKSTREAM)."""
        for stream in self.streams:
            try:
                self.r.xgroup_create(stream, self.d.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def stop(self, *_: object) -> None:
        """Finish the batch in hand, acknowledge it, then leave ``run``."""
        self._stop = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, *, max_idle_s: float | None = None) -> int:
        """Serve until ``stop()`` (SIGTERM). Redis or broker outages are waited out with
        capped exponential backoff; returns the number of entries processed."""
        backoff = 0.1
        idle_since = time.monotonic()
        ready = False
        outage = OutageLog(log, "dispatcher: Redis")  # one line per change of state
        while not self._stop:
            try:
                if not ready:
                    self.ensure_groups()
                    ready = True
                n = self.step()
                backoff = 0.1
                outage.ok()
                if n:
                    idle_since = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
            except (*REDIS_ERRORS, TransientError) as exc:
                outage.failed(_describe(exc), backoff)
                ready = False
                self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.redis.retry_max_backoff_s)
            except redis.ResponseError as exc:
                ready = False
                if "NOGROUP" in str(exc):  # Redis lost its data: recreate the group
                    log.warning("dispatcher: consumer group missing, recreating it")
                    continue
                log.error("dispatcher: Redis refused a command (%s); retrying in %.1fs",
                          str(exc)[:300], backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.redis.retry_max_backoff_s)
            except Exception:
                # A bug met by some entry: never crash-loop the process. The batch stays
                # unacknowledged; reclaiming it counts deliveries, so the entry that
                # causes it ends in the DLQ as poison after max_deliveries.
                log.exception("dispatcher: unexpected error; retrying in %.1fs", backoff)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.redis.retry_max_backoff_s)
        return self.processed

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))

    def step(self) -> int:
        """One round: reclaim stale entries (now and then), read a batch, process it,
        fire due coalescing slots. Returns the number of entries processed."""
        now = time.monotonic()
        n = 0
        if now >= self._next_claim:
            self._next_claim = now + max(self.d.claim_idle_ms / 2000, 0.05)
            n += self.reclaim()
        rows: Any = self.r.xreadgroup(self.d.group, self.consumer,
                                      dict.fromkeys(self.streams, ">"),  # type: ignore[arg-type]
                                      count=self.d.batch_count, block=self.block_ms)
        entries = [Entry(self.streams[_s(stream)], _s(eid), dict(fields))
                   for stream, items in (rows or []) for eid, fields in items]
        if entries:
            self.process_isolating(entries)
            n += len(entries)
        if time.monotonic() >= self._next_flush:
            self._next_flush = time.monotonic() + self.d.coalesce_tick_ms / 1000
            self.flush_coalesced()
        if time.monotonic() >= self._next_redrive:
            self._next_redrive = time.monotonic() + self.settings.runs.redrive_interval_s
            self.redrive()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            self.prune_consumers()
        return n

    def prune_consumers(self, inactive_s: float | None = None) -> int:
        """Remove from the group the consumers of dead dispatchers: those that hold no
        pending entry and have not read for ``PRUNE_INACTIVE_S`` (a live dispatcher
        reads every ``block_ms``). Their pending entries, if they had any, were
        reclaimed first (XAUTOCLAIM), so nothing is dropped. Returns how many."""
        limit_ms = (PRUNE_INACTIVE_S if inactive_s is None else inactive_s) * 1000
        removed = 0
        for stream in self.streams:
            try:
                rows: Any = self.r.xinfo_consumers(stream, self.d.group)
            except redis.ResponseError:
                continue
            for c in rows:
                name = _s(c.get("name", c.get(b"name", b"")))
                idle_ms = c.get("idle", c.get(b"idle", 0))  # since its last read attempt
                pending = int(c.get("pending", c.get(b"pending", 0)) or 0)
                if name == self.consumer or pending or int(idle_ms or 0) < limit_ms:
                    continue
                if int(cast(Any, self.r.xgroup_delconsumer(stream, self.d.group, name)) or 0) == 0:
                    removed += 1
                    log.info("removed consumer %s of a dispatcher gone for %.0f min", name,
                             int(idle_ms) / 60_000)
        return removed

    # -- the run ledger's re-driver ----------------------------------------------------
    def redrive(self) -> tuple[int, int]:
        """Re-send runs that made no progress by their deadline (every dispatcher does
        this; each overdue run is claimed by one). Returns (re-sent, given up)."""
        if self.resender is None:
            return 0, 0
        sent, failed = redrive_overdue(self.ledger, self.resender.resend, self._give_up,
                                       now=self.clock())
        return sent, failed

    def _give_up(self, od: Overdue, reason: str) -> None:
        """A run re-driven ``runs.redrive_max`` times without progress: its event is
        dead-lettered (``stuck``), naming the step, ready to be replayed after a fix."""
        import json

        try:
            fields = json.loads(od.record.get("fields", "{}"))
        except ValueError:
            fields = {}
        workflow = od.record.get("workflow", "")
        dlq_id = self.dlq.add("stuck", reason, fields if isinstance(fields, dict) else {},
                              source="dispatcher", workflow=workflow, run_id=od.run_id,
                              step=od.first_unfinished)
        self.ledger.dead_lettered(od.run_id, dlq_id)
        metrics.workflow_run(workflow or "none", "failed")
        log.error("%s", reason)

    # -- crash recovery ----------------------------------------------------------------
    def reclaim(self) -> int:
        """XAUTOCLAIM entries idle past ``claim_idle_ms`` (their dispatcher died) and
        process them; more than ``max_deliveries`` deliveries: poison."""
        total = 0
        for stream, p in self.streams.items():
            cursor = "0-0"
            while True:
                nxt, claimed, deleted = cast(Any, self.r.xautoclaim(
                    stream, self.d.group, self.consumer, self.d.claim_idle_ms,
                    start_id=cursor, count=self.d.batch_count))[:3]
                entries = [Entry(p, _s(eid), dict(fields)) for eid, fields in claimed if fields]
                if entries:
                    counts = self._delivery_counts(stream, entries)
                    for e in entries:
                        e.deliveries = counts.get(e.id, 1)
                    self.process_isolating(entries)
                    total += len(entries)
                if deleted:
                    total += self._trimmed(p, [_s(i) for i in deleted])
                cursor = _s(nxt)
                if cursor == "0-0" or self._stop:
                    break
        return total

    def _delivery_counts(self, stream: str, entries: list[Entry]) -> dict[str, int]:
        rows: Any = self.r.xpending_range(stream, self.d.group, min=entries[0].id, max=entries[-1].id,
                                     count=len(entries) * 2 + 10, consumername=self.consumer)
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _trimmed(self, partition: int, ids: list[str]) -> int:
        """Pending entries trimmed from the stream before anyone processed them: they
        cannot run, but they are accounted for (dead-lettered, empty fields)."""
        tally = oc.Tally()
        pipe = self.r.pipeline(transaction=True)
        for eid in ids:
            self.dlq.queue(pipe, self.dlq.entry(
                "trimmed", "the entry was trimmed from the stream (MAXLEN) while pending; "
                "raise streams.maxlen_approx", {}, source="dispatcher",
                stream=self.keys.stream(partition), entry_id=eid))
            tally.add(oc.INVALID_TYPE, oc.DEAD_LETTERED)
        tally.queue(pipe, self.keys.outcomes(partition))
        pipe.execute()
        tally.report()
        metrics.dead_lettered("trimmed", len(ids))
        log.error("%d pending entries were trimmed before processing", len(ids))
        return len(ids)

    # -- the batch ---------------------------------------------------------------------
    def process_isolating(self, entries: list[Entry]) -> None:
        """``process``; if it fails for a reason other than Redis or the broker (a bug
        met by one entry), process the entries one by one, so that only the culprit
        stays unacknowledged (and becomes poison once reclaimed often enough)."""
        try:
            self.process(entries)
        except (*REDIS_ERRORS, redis.ResponseError, TransientError):
            raise
        except Exception:
            log.exception("dispatcher: a batch of %d failed; processing it entry by entry",
                          len(entries))
            if len(entries) == 1:
                return  # left pending: reclaimed later, poison after max_deliveries
            for e in entries:
                fresh = Entry(e.partition, e.id, e.fields, e.deliveries)
                try:
                    self.process([fresh])
                except (*REDIS_ERRORS, redis.ResponseError, TransientError):
                    raise
                except Exception:
                    log.exception("dispatcher: entry %s failed (delivery %d); left pending",
                                  e.id, e.deliveries)

    def process(self, entries: list[Entry]) -> None:
        """Take a batch to its recorded outcomes (see the module docstring)."""
        live: list[Entry] = []
        for e in entries:
            if e.deliveries > self.d.max_deliveries:
                e.dlq = ("poison", f"delivered {e.deliveries} times without being acknowledged "
                         f"(dispatcher.max_deliveries={self.d.max_deliveries})")
                continue
            try:
                e.env = decode(e.fields, self.max_bytes, self.catalog,
                               max_future_s=self.settings.streams.max_future_s)
            except InvalidEvent as exc:
                e.dlq = (reason_code(exc), str(exc))
                continue
            try:
                e.routes = self.router.route(e.env)
            except Exception as exc:  # a workflow's filter raised: that event's problem
                e.dlq = ("route_failed", f"routing raised {type(exc).__name__}: {exc}"[:500])
                continue
            if (b"replay" in e.fields or b"route" in e.fields) and not self._granted(e):
                continue
            live.append(e)
        requests, holders = self._decide(live)
        if requests:
            errors = self.starter.start_many([req for _, req in requests])
            for (e, req), err in zip(requests, errors, strict=True):
                if err is not None and e.dlq is None:
                    e.dlq = ("build_failed", err)
                    e.failed_workflow = req.workflow
        self._record(entries, requests, holders)

    def _granted(self, e: Entry) -> bool:
        """``replay``/``route`` are honoured only on an entry that ``mesh dlq replay``
        wrote (its grant exists): a producer cannot bypass dedupe or drop an event by
        setting them. A granted replay of one workflow's failure re-runs that workflow
        only, resuming the failed run."""
        grant = self.dlq.grant(e.attempt) if e.attempt else None
        if grant is None:
            e.dlq = ("invalid", "fields replay/route are set only by `mesh dlq replay` "
                     "(no replay grant for this entry); producers must leave them out")
            return False
        only = grant.get("route", "")
        if only:
            e.routes = [r for r in e.routes if r.workflow == only]
        e.resume_of = grant.get("resume_of", "")
        return True

    def _decide(self, live: list[Entry]) -> tuple[list[tuple[Entry, StartRequest]], list[Entry]]:
        """Dedupe and plan the runs of the valid entries (one pipeline round trip)."""
        ttl = self.d.dedupe_ttl_s
        planned: list[list[tuple[Route, StartRequest | None]]] = []
        pipe = self.r.pipeline(transaction=False)
        for e in live:
            assert e.env is not None
            idem = e.env.idempotency_key + (f"|replay:{e.attempt}" if e.attempt else "")
            pipe.set(self.keys.dedupe(e.partition, idem), e.id, nx=True, get=True, ex=ttl)
            plan: list[tuple[Route, StartRequest | None]] = []
            for route in e.routes:
                if route.coalesce is not None:
                    plan.append((route, None))
                    continue
                run_id = self.starter.run_id(route.workflow, e.env, e.attempt)
                pipe.exists(self.keys.run_marker(e.partition, run_id))
                plan.append((route, StartRequest(route.workflow, e.env, run_id, 1, e.text_fields,
                                                 e.resume_of)))
            planned.append(plan)
        answers = iter(pipe.execute() if live else [])
        requests: list[tuple[Entry, StartRequest]] = []
        holders: list[Entry] = []
        for e, plan in zip(live, planned, strict=True):
            previous = next(answers)
            started_before = [bool(next(answers)) for _, req in plan if req is not None]
            if previous is not None and _s(previous) != e.id:
                e.outcome = oc.DEDUPLICATED
                continue
            if not plan:
                e.outcome = oc.UNROUTED
                continue
            flags = iter(started_before)
            direct = False
            for _route, req in plan:
                if req is None:
                    continue
                direct = True
                if not next(flags):
                    requests.append((e, req))
            if any(req is None for _, req in plan):
                holders.append(e)
            e.outcome = oc.STARTED if direct else oc.COALESCED
        return requests, holders

    def _record(self, entries: list[Entry], requests: list[tuple[Entry, StartRequest]],
                holders: list[Entry]) -> None:
        """One MULTI per partition: run markers, holds, DLQ entries, outcomes, XACK."""
        now = self.clock()
        now_ms = int(now * 1000)
        by_part: dict[int, list[Entry]] = {}
        for e in entries:
            by_part.setdefault(e.partition, []).append(e)
        for p, part in by_part.items():
            pipe = self.r.pipeline(transaction=True)
            tally = oc.Tally()
            for e, req in requests:
                if e.partition == p and e.dlq is None:
                    pipe.set(self.keys.run_marker(p, req.run_id), e.id, ex=self.d.dedupe_ttl_s)
            for e in holders:
                if e.partition != p or e.dlq is not None:
                    continue
                assert e.env is not None
                for route in e.routes:
                    if route.coalesce is not None:
                        self.coalesce.hold(pipe, p, route.workflow, e.env.entity_key, e.id,
                                           e.text_fields, now_ms, route.coalesce.window_s,
                                           route.coalesce.max_wait_s)
            for e in part:
                if e.dlq is not None:
                    code, reason = e.dlq
                    self.dlq.queue(pipe, self.dlq.entry(
                        code, reason, e.text_fields, source="dispatcher",
                        stream=self.keys.stream(p), entry_id=e.id, deliveries=e.deliveries,
                        workflow=e.failed_workflow))
                    e.outcome = oc.DEAD_LETTERED
                assert e.outcome is not None
                tally.add(e.type_label, e.outcome)
            tally.queue(pipe, self.keys.outcomes(p))
            pipe.xack(self.keys.stream(p), self.d.group, *[e.id for e in part])
            pipe.execute()
            tally.report()
            for e in part:
                if e.dlq is not None:
                    metrics.dead_lettered(e.dlq[0], event_type=e.text_fields.get("type") or e.type_label)
                    log.warning("dead-lettered %s (%s): %s", e.id, e.dlq[0], e.dlq[1][:300])
                elif e.outcome == oc.STARTED:
                    metrics.dispatch_latency(now - entry_ms(e.id) / 1000)
        self.processed += len(entries)

    # -- coalescing ----------------------------------------------------------------------
    def flush_coalesced(self) -> int:
        """Start the runs of due coalescing slots. Returns how many started."""
        return self.firer.fire_due(int(self.clock() * 1000))


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _describe(exc: BaseException) -> str:
    from worker_mesh.mesh.redis_conn import describe_error

    return describe_error(exc) if isinstance(exc, redis.RedisError) else str(exc)
