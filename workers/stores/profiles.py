"""Customer profile state: one Redis hash per customer, merged from customer events.

Events arrive at least once and not necessarily in order, so every field carries the
*order* of the event that last set it (``_o:<field>``), and a merge only sets a field
whose incoming order is greater. The order is ``<version>.<occurred_at ms>`` as fixed
width text (compared as strings in Lua):

* ``customer.updated`` uses its ``version``, so a later profile version always wins,
  even if it occurred earlier by some clock;
* ``customer.created`` and ``customer.activity`` use version 0 and their time, so an
  older activity snapshot never replaces a newer one, and sign-up data never replaces
  an explicit update of the same field.

A redelivered event therefore changes nothing. ``_rev`` grows by one on every merge that
changed something: it is the profile version the result store keys scores by.
An index (sorted set, lexicographic) lists every customer for the batch rescoring.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from worker_mesh.mesh.errors import InvalidEvent
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors

_MERGE = """
local k = KEYS[1]
local items = cjson.decode(ARGV[1])
local changed = 0
for _, it in ipairs(items) do
  local f, v, o = it[1], it[2], it[3]
  local cur = redis.call('HGET', k, '_o:' .. f)
  if (not cur) or o > cur then
    if v == cjson.null then
      redis.call('HDEL', k, f)
      redis.call('HSET', k, '_o:' .. f, o)
    else
      redis.call('HSET', k, f, v, '_o:' .. f, o)
    end
    changed = 1
  end
end
local rev
if changed == 1 then
  rev = redis.call('HINCRBY', k, '_rev', 1)
  redis.call('HSET', k, '_event', ARGV[2])
else
  rev = tonumber(redis.call('HGET', k, '_rev') or '0')
end
return {rev, changed}
"""

PROFILE_FIELDS = {
    "customer.created": ("plan", "seats", "mrr", "signup_date", "country"),
    "customer.updated": ("plan", "seats", "mrr", "nps"),
    "customer.activity": ("logins_30d", "active_days_30d", "support_tickets_30d",
                          "failed_payments_90d"),
}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def order_of(version: int, occurred_at: datetime) -> str:
    return f"{version:010d}.{int(occurred_at.timestamp() * 1000):015d}"


def merge_items(event_type: str, payload: dict[str, Any], occurred_at: datetime) -> list[list[Any]]:
    """[field, value-as-text, order] triples an event contributes to a profile."""
    names = PROFILE_FIELDS.get(event_type)
    if names is None:
        raise InvalidEvent(f"{event_type} does not describe a customer profile", field="type")
    version = int(payload.get("version", 1)) if event_type == "customer.updated" else 0
    order = order_of(version, occurred_at)
    items = [[n, str(payload[n]), order] for n in names if payload.get(n) is not None]
    # The profile's "as of" date moves with the newest event (tenure is measured to it).
    items.append(["as_of", occurred_at.date().isoformat(), order_of(0, occurred_at)])
    return items


class ProfileStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._merge = client.register_script(_MERGE)

    def key(self, customer_id: str) -> str:
        return self.keys.ns("customer", customer_id, "profile")

    @property
    def index_key(self) -> str:
        return self.keys.ns("customer", "index")

    def merge(self, customer_id: str, event_type: str, payload: dict[str, Any],
              occurred_at: datetime, event_id: str) -> tuple[int, bool]:
        """Apply one event; returns (profile revision, whether anything changed)."""
        items = merge_items(event_type, payload, occurred_at)
        with translate_errors("profile store"):
            pipe = self.client.pipeline(transaction=False)  # one round trip for both
            self._merge(keys=[self.key(customer_id)], args=[json.dumps(items), event_id], client=pipe)
            pipe.zadd(self.index_key, {customer_id: 0}, nx=True)
            (rev, changed), _ = pipe.execute()
        return int(rev), bool(changed)

    def put(self, profile: dict[str, Any], *, revision: int = 1) -> None:
        """Write a whole profile (seeding from the synthetic generator, tests)."""
        fields: dict[str, str | int] = {k: str(v) for k, v in profile.items()
                                        if v is not None and k != "customer_id"}
        fields["_rev"] = revision
        cid = profile["customer_id"]
        with translate_errors("profile store"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.key(cid), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(self.index_key, {cid: 0}, nx=True)
            pipe.execute()

    def get(self, customer_id: str) -> dict[str, Any]:
        """Raw stored fields (``_rev`` included); empty if unknown."""
        with translate_errors("profile store"):
            raw = self.client.hgetall(self.key(customer_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    def get_many(self, customer_ids: list[str]) -> list[dict[str, Any]]:
        with translate_errors("profile store"):
            pipe = self.client.pipeline(transaction=False)
            for cid in customer_ids:
                pipe.hgetall(self.key(cid))
            rows = pipe.execute()
        return [{_s(k): _s(v) for k, v in row.items()} for row in rows]

    def count(self) -> int:
        with translate_errors("profile store"):
            return int(self.client.zcard(self.index_key))

    def shard_bounds(self, shard_size: int) -> list[tuple[str, str | None]]:
        """[lo, hi) customer-id ranges of about ``shard_size`` customers each.

        Ranges by id, not by position: a customer added while the rescoring runs shifts
        no other customer out of its shard."""
        with translate_errors("profile store"):
            ids = [_s(x) for x in self.client.zrange(self.index_key, 0, -1)]
        starts = ids[::shard_size]
        return [(lo, starts[i + 1] if i + 1 < len(starts) else None) for i, lo in enumerate(starts)]

    def ids_between(self, lo: str, hi: str | None) -> list[str]:
        with translate_errors("profile store"):
            raw = self.client.zrangebylex(self.index_key, f"[{lo}", f"({hi}" if hi else "+")
        return [_s(x) for x in raw]
