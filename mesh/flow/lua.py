"""The Lua scripts behind the limiters: each decision is one atomic script, so any
number of workers share one budget without races (run with EVALSHA through redis-py's
``Script``, which falls back to EVAL after a Redis restart).

Time is Redis's own clock (``TIME``) unless the caller passes ``now`` (tests), so the
workers' clocks may drift without effect. Every key of one resource (or one concurrency
key) carries the same hash tag, so a script touches one Redis Cluster slot.

Rate-limit keys (``{<prefix>:flow:<resource>}:...``)::

    log       zset  permit id -> admission time        (the sliding window)
    cost      hash  permit id -> "<requests>,<tokens>"  (estimate, then the real usage)
    state     hash  req, tok (sums over the window), avg (real tokens per request),
                    vtime, paused_until, counters (admitted, throttled, pauses...)
    queue     zset  ticket -> priority * 2^40 + fair-share tag   (the line of waiters)
    deadline  zset  ticket -> time it stops holding its place (expected wake + grace)
    since     zset  ticket -> time it first waited (oldest waiter, for alerts)
    vt        hash  tenant -> its last fair-share tag
    t:<ticket> str  "<tag>|<first waited>" (TTL): a late waiter keeps its place
"""

from __future__ import annotations

_COMMON = r"""
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function f(x) return string.format('%.6f', x) end
local function chunked(cmd, key, items)
  for i = 1, #items, 500 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 499, #items)))
  end
end
local function incr(key, field, n)
  if n ~= 0 then redis.call('HINCRBY', key, field, string.format('%d', n)) end
end
local function split(c)
  local r, t = string.match(c, '^([^,]+),([^,]+)$')
  return tonumber(r), tonumber(t)
end
"""

# Evict log entries that left the window (keeping the req/tok sums exact).
_EVICT = r"""
local function evict(log, cost, state, now, window)
  local edge = f(now - window)  -- an entry at t counts in [t, t + window)
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', edge)
  if #old == 0 then return end
  local dr, dt = 0, 0
  for i = 1, #old, 500 do
    local part = {unpack(old, i, math.min(i + 499, #old))}
    local costs = redis.call('HMGET', cost, unpack(part))
    for _, c in ipairs(costs) do
      if c then local r, t = split(c); dr = dr + r; dt = dt + t end
    end
    redis.call('HDEL', cost, unpack(part))
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', edge)
  incr(state, 'req', -dr)
  incr(state, 'tok', -dt)
end
local function purge(deadline, now, a, b)
  local dead = redis.call('ZRANGEBYSCORE', deadline, '-inf', f(now))
  if #dead > 0 then
    chunked('ZREM', deadline, dead); chunked('ZREM', a, dead)
    if b then chunked('ZREM', b, dead) end
  end
  return #dead
end
"""

# When will `need` units (dimension 1 = requests, 2 = tokens) have left the window?
# Walks the log oldest first; past its end, assumes the budget keeps being used at
# its full rate (`limit` per `window`).
_FREE_AT = r"""
local function free_at(log, cost, now, window, need, dim, total, limit)
  if need <= total then
    local acc, i = 0, 0
    while true do
      local ids = redis.call('ZRANGE', log, i, i + 199, 'WITHSCORES')
      if #ids == 0 then break end
      local names = {}
      for j = 1, #ids, 2 do names[#names + 1] = ids[j] end
      local costs = redis.call('HMGET', cost, unpack(names))
      for j = 1, #names do
        local c = costs[j]
        if c then
          local r, t = split(c)
          acc = acc + (dim == 1 and r or t)
          if acc >= need then return tonumber(ids[2 * j]) + window end
        end
      end
      i = i + 200
    end
  end
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  local base = now
  if #last > 0 then base = math.max(now, tonumber(last[2]) + window) end
  return base + (need - math.min(need, total)) * window / limit
end
"""

ACQUIRE = _COMMON + _EVICT + _FREE_AT + r"""
-- KEYS: log cost state queue deadline since vt ticket_key
-- ARGV: now permit ticket tenant weight priority requests tokens limit_req limit_tok
--       window grace ticket_ttl default_avg min_wait burst_fraction
local log, cost, state, queue, deadline, since, vt, tkey =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local now = clock(ARGV[1])
local permit, ticket, tenant = ARGV[2], ARGV[3], ARGV[4]
local weight, prio = tonumber(ARGV[5]), tonumber(ARGV[6])
local nreq, ntok = tonumber(ARGV[7]), tonumber(ARGV[8])
local lreq, ltok, window = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local grace, ttl, min_wait = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[15])
local BAND = 1099511627776  -- 2^40: priorities never mix in the line

evict(log, cost, state, now, window)
purge(deadline, now, queue, since)

-- The ticket's fair-share tag: kept from an earlier wait, or a new one after the
-- tenant's previous tag and the class's head of line (weighted fair queueing).
local tag, first
local saved = redis.call('GET', tkey)
if saved then
  local a, b = string.match(saved, '^([^|]+)|([^|]+)$')
  tag, first = tonumber(a), tonumber(b)
else
  local v = tonumber(redis.call('HGET', state, 'vtime') or '0')
  local head = redis.call('ZRANGEBYSCORE', queue, f(prio * BAND), '(' .. f((prio + 1) * BAND),
                          'WITHSCORES', 'LIMIT', 0, 1)
  if #head > 0 then v = tonumber(head[2]) - prio * BAND end
  local last = tonumber(redis.call('HGET', vt, tenant) or '0')
  tag = math.max(v, last) + 1 / weight
  redis.call('HSET', vt, tenant, f(tag))
  first = now
end
local score = prio * BAND + tag
local ahead = redis.call('ZCOUNT', queue, '-inf', '(' .. f(score))

local req = tonumber(redis.call('HGET', state, 'req') or '0')
local tok = tonumber(redis.call('HGET', state, 'tok') or '0')
local avg = tonumber(redis.call('HGET', state, 'avg') or ARGV[14])
local paused = tonumber(redis.call('HGET', state, 'paused_until') or '0')
local need_r = req + ahead + nreq
local need_t = tok + ahead * avg + ntok
local fits_r = lreq <= 0 or need_r <= lreq
local fits_t = ltok <= 0 or need_t <= ltok
-- Pacing (GCRA): one typical call per `step` seconds, bursts up to `tau` after a lull,
-- so the budget is spread over the window instead of spent in one burst per window
-- (an urgent step arriving after a burst would otherwise wait a whole window).
local step = 0
if lreq > 0 then step = window / lreq end
if ltok > 0 then step = math.max(step, math.max(avg, 1) * window / ltok) end
local tau = tonumber(ARGV[16]) * window
local tat = tonumber(redis.call('HGET', state, 'tat') or '0')
local pace_at = tat - tau + ahead * step
local fits_p = now >= pace_at

if paused <= now and fits_r and fits_t and fits_p then
  redis.call('HSET', state, 'tat', f(math.max(tat, now) + step * nreq))
  redis.call('ZADD', log, f(now), permit)
  redis.call('HSET', cost, permit, nreq .. ',' .. ntok)
  incr(state, 'req', nreq)
  incr(state, 'tok', ntok)
  incr(state, 'admitted', 1)
  local v = tonumber(redis.call('HGET', state, 'vtime') or '0')
  if tag > v then redis.call('HSET', state, 'vtime', f(tag)) end
  redis.call('ZREM', queue, ticket); redis.call('ZREM', deadline, ticket)
  redis.call('ZREM', since, ticket); redis.call('DEL', tkey)
  return {1, f(now - first), ahead, f(now)}
end

local wake = math.max(now + min_wait, paused, pace_at)
if not fits_r then
  wake = math.max(wake, free_at(log, cost, now, window, need_r - lreq, 1, req, lreq))
end
if not fits_t then
  wake = math.max(wake, free_at(log, cost, now, window, need_t - ltok, 2, tok, ltok))
end
redis.call('ZADD', queue, f(score), ticket)
redis.call('ZADD', deadline, f(wake + grace), ticket)
redis.call('ZADD', since, 'NX', f(first), ticket)
redis.call('SET', tkey, f(tag) .. '|' .. f(first), 'EX', ttl)
incr(state, 'throttled', 1)
return {0, f(wake - now), ahead, f(now - first)}
"""

RECONCILE = _COMMON + r"""
-- KEYS: cost state   ARGV: permit actual_tokens alpha
local c = redis.call('HGET', KEYS[1], ARGV[1])
local actual, alpha = tonumber(ARGV[2]), tonumber(ARGV[3])
if c then
  local r, t = split(c)
  redis.call('HSET', KEYS[1], ARGV[1], r .. ',' .. actual)
  incr(KEYS[2], 'tok', actual - t)
end
local avg = tonumber(redis.call('HGET', KEYS[2], 'avg') or ARGV[2])
redis.call('HSET', KEYS[2], 'avg', f(avg * (1 - alpha) + actual * alpha))
incr(KEYS[2], 'tokens_reported', actual)
return c and 1 or 0
"""

CANCEL = _COMMON + r"""
-- KEYS: log cost state   ARGV: permit   (the call was never made)
local c = redis.call('HGET', KEYS[2], ARGV[1])
if not c then return 0 end
local r, t = split(c)
redis.call('ZREM', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1])
incr(KEYS[3], 'req', -r); incr(KEYS[3], 'tok', -t)
incr(KEYS[3], 'cancelled', 1)
return 1
"""

PAUSE = _COMMON + r"""
-- KEYS: state   ARGV: now delay_s   (a 429: nobody calls before the provider's time)
local now = clock(ARGV[1])
local until_ = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'paused_until') or '0')
if until_ > cur then redis.call('HSET', KEYS[1], 'paused_until', f(until_)) end
incr(KEYS[1], 'pauses', 1)
return f(math.max(until_, cur) - now)
"""

STATUS = _COMMON + _EVICT + r"""
-- KEYS: log cost state queue deadline since   ARGV: now window
local now = clock(ARGV[1])
evict(KEYS[1], KEYS[2], KEYS[3], now, tonumber(ARGV[2]))
purge(KEYS[5], now, KEYS[4], KEYS[6])
local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
local s = redis.call('HGETALL', KEYS[3])
return {f(now), redis.call('ZCARD', KEYS[4]), oldest[2] or '', s}
"""

# -- concurrency keys ({<prefix>:flowc:<name>:<key>}:...) --------------------------------
#   holders  zset  holder (step id) -> lease expiry
#   queue    zset  holder waiting -> first time it waited (FIFO)
#   deadline zset  holder waiting -> time it stops holding its place
#   state    hash  avg_hold, s:<holder> (start), counters (admitted, throttled, expired)
_LEASE_COMMON = r"""
local function expire(holders, state, now)
  local gone = redis.call('ZRANGEBYSCORE', holders, '-inf', f(now))
  if #gone == 0 then return end
  chunked('ZREM', holders, gone)
  local fields = {}
  for _, h in ipairs(gone) do fields[#fields + 1] = 's:' .. h end
  chunked('HDEL', state, fields)
  incr(state, 'expired', #gone)
end
"""

LEASE_ACQUIRE = _COMMON + _EVICT + _LEASE_COMMON + r"""
-- KEYS: holders queue deadline state
-- ARGV: now holder limit lease_s grace min_wait default_hold
local holders, queue, deadline, state = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = clock(ARGV[1])
local holder, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local grace, min_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
expire(holders, state, now)
purge(deadline, now, queue, nil)
if redis.call('ZSCORE', holders, holder) then
  -- re-entrant: a redelivered step (same id) takes its own slot back at once
  redis.call('ZADD', holders, f(now + lease), holder)
  return {1, '0', 0, '0'}
end
local first = tonumber(redis.call('ZSCORE', queue, holder) or now)
local ahead = redis.call('ZCOUNT', queue, '-inf', '(' .. f(first))
local running = redis.call('ZCARD', holders)
if running + ahead < limit then
  redis.call('ZADD', holders, f(now + lease), holder)
  redis.call('HSET', state, 's:' .. holder, f(now))
  redis.call('ZREM', queue, holder); redis.call('ZREM', deadline, holder)
  incr(state, 'admitted', 1)
  return {1, f(now - first), ahead, '0'}
end
local hold = tonumber(redis.call('HGET', state, 'avg_hold') or ARGV[7])
local delay = hold * (ahead + 1) / limit
local soonest = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
if #soonest > 0 then delay = math.min(delay, tonumber(soonest[2]) - now) end
delay = math.max(delay, min_wait)
redis.call('ZADD', queue, 'NX', f(first), holder)
redis.call('ZADD', deadline, f(now + delay + grace), holder)
incr(state, 'throttled', 1)
return {0, f(delay), ahead, f(now - first)}
"""

LEASE_RELEASE = _COMMON + r"""
-- KEYS: holders state   ARGV: now holder alpha
local now = clock(ARGV[1])
local holder, alpha = ARGV[2], tonumber(ARGV[3])
local removed = redis.call('ZREM', KEYS[1], holder)
local start = redis.call('HGET', KEYS[2], 's:' .. holder)
redis.call('HDEL', KEYS[2], 's:' .. holder)
if removed == 1 and start then
  local held = now - tonumber(start)
  local avg = tonumber(redis.call('HGET', KEYS[2], 'avg_hold') or held)
  redis.call('HSET', KEYS[2], 'avg_hold', f(avg * (1 - alpha) + held * alpha))
  incr(KEYS[2], 'released', 1)
end
return removed
"""

LEASE_RENEW = _COMMON + r"""
-- KEYS: holders   ARGV: now holder lease_s   -> 1 renewed, 0 lost (it expired)
local now = clock(ARGV[1])
return redis.call('ZADD', KEYS[1], 'XX', 'CH', f(now + tonumber(ARGV[3])), ARGV[2])
"""

LEASE_STATUS = _COMMON + _LEASE_COMMON + r"""
-- KEYS: holders queue deadline state   ARGV: now
local now = clock(ARGV[1])
expire(KEYS[1], KEYS[4], now)
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', f(now))
if #dead > 0 then chunked('ZREM', KEYS[3], dead); chunked('ZREM', KEYS[2], dead) end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {f(now), redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), oldest[2] or ''}
"""
