"""Dead letters by reason and event type, counted from the dead-letter stream itself.

Why from the stream: dead letters are written by dispatchers and by workers (a run that
finally failed), processes that come and go; a per-process counter loses what a killed
process counted, and a (reason, type) pair seen for the first time appears as a new
series at 1, which ``increase()`` does not see. The stream holds every dead letter with
its ``reason_code`` and ``type``, so the exporter (and ``mesh status``) tally it: one Lua
script reads the entries after a cursor (at most ``BATCH`` per call), adds them to a
hash of counts and records the time of the newest entry per pair. Atomic, so several
exporter replicas never count an entry twice; bounded per call, so a flood is caught up
over a few scrapes.

Exported as ``mesh_dlq_entries_added_total{reason,type}`` and
``mesh_dlq_last_added_timestamp_seconds{reason,type}``; ``MeshDeadLetterGrowing`` fires
per pair, so a second cause while the first is firing raises its own alert.
"""

from __future__ import annotations

from typing import Any

BATCH = 5000
"""Dead letters tallied per call at most."""
UNKNOWN_TYPE = "unknown"
"""Label of dead letters without a type (garbage entries)."""
OTHER = "other"
"""Label of types outside the catalog and of odd reason codes (bounded labels)."""

# KEYS: dlq stream, cursor, counts, last. ARGV: batch, known type names...
_TALLY_LUA = """
local cur = redis.call('GET', KEYS[2]) or '0-0'
local rows = redis.call('XRANGE', KEYS[1], '(' .. cur, '+', 'COUNT', tonumber(ARGV[1]))
if #rows == 0 then return 0 end
local known = {}
for i = 2, #ARGV do known[ARGV[i]] = true end
for _, row in ipairs(rows) do
  local id, f = row[1], row[2]
  local reason, etype = 'other', ''
  for i = 1, #f, 2 do
    if f[i] == 'reason_code' then reason = f[i + 1] elseif f[i] == 'type' then etype = f[i + 1] end
  end
  if etype == '' then etype = 'unknown' elseif not known[etype] then etype = 'other' end
  if not string.match(reason, '^[%w_.-]+$') or #reason > 64 then reason = 'other' end
  local pair = reason .. '|' .. etype
  redis.call('HINCRBY', KEYS[3], pair, 1)
  local ms = tonumber(string.match(id, '^(%d+)-'))
  redis.call('HSET', KEYS[4], pair, ms)
end
redis.call('SET', KEYS[2], rows[#rows][1])
return #rows
"""


def _keys(keys: Any) -> tuple[str, str, str]:
    return (str(keys.ns("mon", "dlq", "cursor")), str(keys.ns("mon", "dlq", "counts")),
            str(keys.ns("mon", "dlq", "last_ms")))


def known_types() -> list[str]:
    try:
        from worker_mesh.events.catalog import CATALOG

        return sorted(CATALOG.names())
    except Exception:  # pragma: no cover - catalog import problems: every type is "other"
        return []


def tally(client: Any, keys: Any, types: list[str] | None = None) -> dict[tuple[str, str], tuple[int, float]]:
    """Count the dead letters added since the last call, then return every (reason,
    type) pair ever seen -> (count, Unix time of its newest dead letter)."""
    cursor, counts_key, last_key = _keys(keys)
    client.eval(_TALLY_LUA, 4, keys.dlq, cursor, counts_key, last_key, BATCH,
                *(known_types() if types is None else types))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(counts_key)
    pipe.hgetall(last_key)
    counts, last = pipe.execute()
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for raw, n in counts.items():
        pair = raw.decode() if isinstance(raw, bytes) else str(raw)
        reason, _, etype = pair.partition("|")
        ms = last.get(raw, last.get(pair, 0))
        out[(reason, etype)] = (int(n), float(ms) / 1000)
    return out
