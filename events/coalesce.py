"""Coalescing slots, held durably in Redis.

One slot per (workflow, entity key) and partition: a hash ``keys.coalesce_slot(p, slot)``
holding the latest event's wire fields (``fields``, JSON), its stream entry id
(``entry``), the time the slot opened (``first_ms``) and how many entries it holds
(``count``); and a member of the sorted set ``keys.coalesce_due(p)`` scored with the
time it fires: ``min(last + window, first + max_wait)``.

* ``hold`` (Lua, queued on the dispatcher's MULTI with the entry's XACK): keeps the
  newest entry (by stream id, so a redelivered older entry never replaces a newer
  one) and moves the due time.
* ``take`` (Lua): due slots are leased (their score pushed ``lease_ms`` into the
  future) and returned; a dispatcher that dies before starting the run leaves a slot
  that fires again when the lease runs out.
* ``done`` (Lua, on the MULTI that records the run marker): removes the slot if it
  still holds the entry that was started, else keeps it (newer events came in) with
  its count reduced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from worker_mesh.mesh.keys import Keys

_HOLD = """
local cur = redis.call('HGET', KEYS[1], 'entry')
local first = redis.call('HGET', KEYS[1], 'first_ms')
if not first then
  first = ARGV[2]
  redis.call('HSET', KEYS[1], 'first_ms', first, 'workflow', ARGV[7])
end
local newer = true
if cur then
  local cm, cs = string.match(cur, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[5], '^(%d+)-(%d+)$')
  cm, cs, nm, ns = tonumber(cm), tonumber(cs), tonumber(nm), tonumber(ns)
  if nm < cm or (nm == cm and ns <= cs) then newer = false end
end
if newer then
  redis.call('HSET', KEYS[1], 'entry', ARGV[5], 'fields', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'count', 1)
end
local due = math.min(tonumber(ARGV[2]) + tonumber(ARGV[3]), tonumber(first) + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], due, ARGV[1])
return 1
"""

_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(due) do
  local h = redis.call('HMGET', ARGV[4] .. member, 'entry', 'fields', 'count', 'workflow')
  if h[1] then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), member)
    out[#out + 1] = {member, h[1], h[2], h[3], h[4]}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""

_DONE = """
local cur = redis.call('HGET', KEYS[1], 'entry')
if cur == ARGV[2] or not cur then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HINCRBY', KEYS[1], 'count', -tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'first_ms', ARGV[4])
return 0
"""


@dataclass(frozen=True)
class DueSlot:
    """A slot whose run is due: the latest event held and how many events it stands for."""

    partition: int
    member: str
    workflow: str
    entry_id: str
    fields: dict[str, str]
    count: int


def slot_member(workflow: str, entity_key: str) -> str:
    return f"{workflow}|{entity_key}"


class CoalesceStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._keys = keys
        self._hold = client.register_script(_HOLD)
        self._take = client.register_script(_TAKE)
        self._done = client.register_script(_DONE)
        self._r = client

    def hold(self, pipe: redis.client.Pipeline, partition: int, workflow: str, entity_key: str,
             entry_id: str, fields: Mapping[str, str], now_ms: int, window_s: float,
             max_wait_s: float) -> None:
        """Queue holding one entry for (workflow, entity) on ``pipe``."""
        member = slot_member(workflow, entity_key)
        self._hold(
            keys=[self._keys.coalesce_slot(partition, member), self._keys.coalesce_due(partition)],
            args=[member, now_ms, int(window_s * 1000), int(max_wait_s * 1000), entry_id,
                  json.dumps(dict(fields), separators=(",", ":")), workflow],
            client=pipe,
        )

    def take(self, partition: int, now_ms: int, lease_ms: int, limit: int = 500) -> list[DueSlot]:
        """Lease and return the slots due at ``now_ms``."""
        prefix = self._keys.coalesce_slot(partition, "")
        rows = self._take(keys=[self._keys.coalesce_due(partition)],
                          args=[now_ms, lease_ms, limit, prefix])
        out = []
        for member, entry, fields, count, workflow in rows:
            m = _s(member)
            out.append(DueSlot(partition, m, _s(workflow) if workflow else m.split("|", 1)[0],
                               _s(entry), json.loads(_s(fields)), int(count or 1)))
        return out

    def done(self, pipe: redis.client.Pipeline, slot: DueSlot, now_ms: int) -> None:
        """Queue releasing ``slot`` after its run started (on ``pipe``)."""
        self._done(
            keys=[self._keys.coalesce_slot(slot.partition, slot.member),
                  self._keys.coalesce_due(slot.partition)],
            args=[slot.member, slot.entry_id, slot.count, now_ms],
            client=pipe,
        )

    def pending(self, partitions: int) -> int:
        """Slots waiting to fire, over all partitions."""
        return sum(int(self._r.zcard(self._keys.coalesce_due(p))) for p in range(partitions))


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
