"""The run ledger's Lua scripts (``mesh.runs``): one script per transition, so a run
ends in exactly one outcome however often its messages are redelivered.

Keys a script builds from the tag (all under the hash tag ``{<prefix>:runs}``, one
Redis Cluster slot; their layout is in ``mesh.keys``)::

    run:<id>            hash   the run's record (state, workflow, steps, per-step x:/e:/w:)
    rec:<id>            string JSON of a finished run's bulky fields (``COMPACT``)
    memo:<id>           hash   step -> memoized result (kept for failed runs only)
    inflight            zset   run id -> deadline
    latest              hash   <workflow>|<entity> -> run in flight (supersede)
    idx:wf:<wf>@<ver>   zset   run id -> started_at (history by workflow and version)
    idx:wfv             set    every <wf>@<ver> that has an index
    idx:ent:<entity>    zset   run id -> started_at (history of one entity)
    idx:mv:<version>    zset   run id -> started_at (runs whose steps used that model)
    idx:state:<state>   zset   run id -> started_at (failed and cancelled runs only)

Per step ``<s>`` the record holds ``x:<s>`` = ``first start|last start|end|attempts|
state`` (milliseconds after the run's start), ``e:<s>`` its last error and ``w:<s>``
what it wrote.
Every index is trimmed by score (``started_at`` older than the retention) and given the
retention as TTL each time it is written, so history is bounded without a sweeper.
"""

from __future__ import annotations

# A run's deadline is the max of its running steps' deadlines (fields ``r:<step>``) and
# ``now + queued`` - so a chord member that finishes early does not shorten the
# deadline of a long member still running.
DEADLINE = """
local function deadline(run, base)
  local d = tonumber(base)
  local all = redis.call('HGETALL', run)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'r:' then
      local v = tonumber(all[i + 1])
      if v > d then d = v end
    end
  end
  return d
end
"""

# Index a run (ZADD by its start time), trimming what the retention left behind.
INDEX = """
local function index(key, score, run_id, now, retention)
  redis.call('ZADD', key, score, run_id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (tonumber(now) - tonumber(retention)))
  redis.call('EXPIRE', key, retention)
end
"""

# The per-step record ``x:<step>``: first start|last start|end|attempts|state, the
# times in milliseconds after the run's start (short: kept for every step of every run).
STEPX = """
local function stepx(run, step, now, what)
  local f = 'x:' .. step
  local got = redis.call('HMGET', run, f, 'started_at')
  local v = got[1] or '||||'
  local a, b, c, n, s = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  n = tonumber(n) or 0
  if now ~= '' then
    local t0 = tonumber(got[2] or now)
    now = string.format('%d', math.floor((tonumber(now) - t0) * 1000 + 0.5))
  end
  if what == 'running' then
    if a == '' then a = now end
    b, c, n, s = now, '', n + 1, 'running'
  elseif what == 'succeeded' or what == 'failed' then
    c, s = now, what
    if a == '' then a = now end
  else
    s = what
  end
  redis.call('HSET', run, f, a .. '|' .. b .. '|' .. c .. '|' .. n .. '|' .. s)
end
"""

# A run that ended succeeded or cancelled is kept compact for its retention: its
# summary fields stay in the record hash (small values: Redis keeps it as a listpack,
# a fifth of a hashtable's memory), the bulky ones (the cause event's fields, the
# steps, per-step x:/e:/w:) move to one JSON string ``rec:<id>``, and what only
# mattered in flight is dropped. Failed runs keep their full record and their memo
# (a dead-letter replay resumes them); the others' memo expires after
# ``runs.memo_after_end_s`` (a message redelivered after the end still gets its result).
COMPACT = """
local function compact(tag, run_id, retention)
  -- built here, not at the script's top: only the call that ends a run pays for them
  local SUMMARY = {state=1, workflow=1, version=1, entity=1, event_id=1, event_type=1,
    started_at=1, finished_at=1, mv=1, mv_step=1, failed_step=1, reason=1, superseded_by=1,
    trace=1, retries=1, replay_of=1}
  local TRANSIENT = {progress_at=1, done_step=1, redrives=1, running=1, last=1, canvas=1}
  local DEFAULTS = {['held=0']=1, ['coalesced=1']=1, ['redrives_total=0']=1}
  local run = tag .. ':run:' .. run_id
  local all = redis.call('HGETALL', run)
  local small, big, nbig = {}, {}, 0
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    if SUMMARY[f] and v ~= '' then
      small[#small + 1] = f
      small[#small + 1] = v
    elseif not SUMMARY[f] and not TRANSIENT[f] and v ~= '' and not DEFAULTS[f .. '=' .. v] then
      if f == 'fields' or f == 'steps' then  -- JSON kept as JSON, not escaped twice
        local ok, decoded = pcall(cjson.decode, v)
        if ok then v = decoded end
      end
      big[f] = v
      nbig = nbig + 1
    end
  end
  redis.call('DEL', run)
  redis.call('HSET', run, unpack(small))
  redis.call('EXPIRE', run, retention)
  if nbig > 0 then
    redis.call('SET', tag .. ':rec:' .. run_id, cjson.encode(big), 'EX', retention)
  end
end
"""

FINISH = COMPACT + """
local function finish(tag, run_id, outcome, now, retention, reason, kept, memo_s)
  local run = tag .. ':run:' .. run_id
  local wf = redis.call('HGET', run, 'workflow') or '?'
  local started = tonumber(redis.call('HGET', run, 'started_at') or now)
  redis.call('HSET', run, 'state', outcome, 'finished_at', now, 'reason', reason)
  local drop = {'canvas'}
  local all = redis.call('HKEYS', run)
  for i = 1, #all do
    if string.sub(all[i], 1, 2) == 'r:' then drop[#drop + 1] = all[i] end
  end
  redis.call('HDEL', run, unpack(drop))
  redis.call('ZREM', tag .. ':inflight', run_id)
  local counts = tag .. ':counts'
  redis.call('HINCRBY', counts, outcome, 1)
  redis.call('HINCRBY', counts, wf .. '|' .. outcome, 1)
  local stats = tag .. ':stats:' .. wf
  if outcome == 'succeeded' then
    redis.call('HINCRBY', stats, 'successes', 1)
    local durs = tag .. ':durations:' .. wf
    redis.call('LPUSH', durs, string.format('%.6f', math.max(tonumber(now) - started, 0)))
    redis.call('LTRIM', durs, 0, tonumber(kept) - 1)
    redis.call('HSET', tag .. ':last_success', wf, string.format('%.3f', tonumber(now)))
  else
    if outcome == 'failed' then
      redis.call('HINCRBY', stats, 'failures', 1)
    else
      redis.call('HINCRBY', stats, 'cancelled', 1)
    end
    index(tag .. ':idx:state:' .. outcome, started, run_id, now, retention)
  end
  local ent = redis.call('HGET', run, 'entity') or ''
  if ent ~= '' then
    local lk, lf = tag .. ':latest', wf .. '|' .. ent
    if redis.call('HGET', lk, lf) == run_id then redis.call('HDEL', lk, lf) end
  end
  if outcome == 'failed' then
    redis.call('EXPIRE', run, retention)
    redis.call('EXPIRE', tag .. ':memo:' .. run_id, retention)
  else
    redis.call('EXPIRE', tag .. ':memo:' .. run_id, memo_s)
    compact(tag, run_id, retention)
  end
end
"""

# ARGV: tag, run_id, deadline, resume_of ('' none), supersede ('1' or ''), now,
#       retention, kept, memo_s, field, value, ...
# Returns 0 (known run: a redelivery), 1 (new) or the id of the run it superseded.
START = """
local tag, run_id = ARGV[1], ARGV[2]
local now, retention, kept = ARGV[6], ARGV[7], ARGV[8]
local run = tag .. ':run:' .. run_id
if redis.call('EXISTS', run) == 1 then return 0 end
local fv = {}
for i = 10, #ARGV do fv[#fv + 1] = ARGV[i] end
redis.call('HSET', run, unpack(fv))
redis.call('ZADD', tag .. ':inflight', ARGV[3], run_id)
local rec = redis.call('HMGET', run, 'workflow', 'version', 'entity', 'started_at')
local wf, ver, ent, started = rec[1], rec[2] or '', rec[3] or '', tonumber(rec[4] or now)
redis.call('HINCRBY', tag .. ':counts', 'started', 1)
redis.call('HINCRBY', tag .. ':counts', wf .. '|started', 1)
index(tag .. ':idx:wf:' .. wf .. '@' .. ver, started, run_id, now, retention)
redis.call('SADD', tag .. ':idx:wfv', wf .. '@' .. ver)
if ent ~= '' then index(tag .. ':idx:ent:' .. ent, started, run_id, now, retention) end
if ARGV[4] ~= '' then
  local old = tag .. ':memo:' .. ARGV[4]
  if redis.call('EXISTS', old) == 1 then
    redis.call('COPY', old, tag .. ':memo:' .. run_id, 'REPLACE')
    redis.call('PERSIST', tag .. ':memo:' .. run_id)
  end
end
local out = 1
if ARGV[5] == '1' and ent ~= '' then
  local lk, lf = tag .. ':latest', wf .. '|' .. ent
  local prev = redis.call('HGET', lk, lf)
  if prev and prev ~= run_id then
    local prun = tag .. ':run:' .. prev
    if redis.call('HGET', prun, 'state') == 'started' then
      redis.call('HSET', prun, 'superseded_by', run_id)
      finish(tag, prev, 'cancelled', now, retention, 'superseded by run ' .. run_id, kept, ARGV[9])
      out = prev
    end
  end
  redis.call('HSET', lk, lf, run_id)
end
return out
"""

# ARGV: tag, run_id, step, running deadline, now
BEGIN = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
local st = redis.call('HGET', run, 'state')
if not st then return {false, false} end
local m = redis.call('HGET', tag .. ':memo:' .. run_id, step)
if st == 'started' and not m then
  redis.call('HSET', run, 'r:' .. step, ARGV[4], 'running', step)
  redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[4]), run_id)
  stepx(run, step, ARGV[5], 'running')
end
return {st, m}
"""

# ARGV: tag, run_id, step, memo value, queued deadline, now, retention, kept,
#       model version ('' none), what it wrote ('' nothing), memo_s
# Returns 0: run not in flight (unknown or finished), 1: progress, 2: run succeeded.
# A step that finishes after its run ended (cancelled while it ran) still gets its
# timing and what it wrote recorded: its effect happened.
DONE = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
local st = redis.call('HGET', run, 'state')
if not st then return 0 end
stepx(run, step, ARGV[6], 'succeeded')
if ARGV[10] ~= '' then redis.call('HSET', run, 'w:' .. step, ARGV[10]) end
if st ~= 'started' then return 0 end
redis.call('HSET', tag .. ':memo:' .. run_id, step, ARGV[4])
redis.call('HDEL', run, 'r:' .. step, 'running')
local mv = ARGV[9]
if mv ~= '' and redis.call('HGET', run, 'mv') ~= mv then
  redis.call('HSET', run, 'mv', mv, 'mv_step', step)
  local started = tonumber(redis.call('HGET', run, 'started_at') or ARGV[6])
  index(tag .. ':idx:mv:' .. mv, started, run_id, ARGV[6], ARGV[7])
end
if redis.call('HGET', run, 'last') == step then
  finish(tag, run_id, 'succeeded', ARGV[6], ARGV[7], '', ARGV[8], ARGV[11])
  return 2
end
redis.call('HSET', run, 'progress_at', ARGV[6], 'done_step', step, 'redrives', 0)
redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[5]), run_id)
return 1
"""

# ARGV: tag, run_id, step, retry deadline
RETRY = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
if redis.call('HGET', run, 'state') ~= 'started' then return 0 end
redis.call('HSET', run, 'r:' .. step, ARGV[4])
redis.call('HINCRBY', run, 'retries', 1)
stepx(run, step, '', 'retry')
local wf = redis.call('HGET', run, 'workflow')
redis.call('HINCRBY', tag .. ':stats:' .. wf, 'retries', 1)
redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[4]), run_id)
return 1
"""

# ARGV: tag, run_id, step, error. The last error of a step (a retry's, or the final one).
ERROR = """
local run = ARGV[1] .. ':run:' .. ARGV[2]
if redis.call('EXISTS', run) == 0 then return 0 end
redis.call('HSET', run, 'e:' .. ARGV[3], ARGV[4])
return 1
"""

# ARGV: tag, run_id, outcome, now, retention, reason, kept, claimer ('' none),
#       failed step ('' none), error, memo_s
# Returns 1 when this call ended the run; for 'failed' with a claimer, also 1 when the
# run failed earlier under the same claimer and its dead letter is not recorded yet
# (a retried failure callback), so the event is dead-lettered exactly once.
END = """
local tag, run_id = ARGV[1], ARGV[2]
local run = tag .. ':run:' .. run_id
local st = redis.call('HGET', run, 'state')
if st == 'started' then
  finish(tag, run_id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[11])
  if ARGV[8] ~= '' then redis.call('HSET', run, 'dlq_claim', ARGV[8]) end
  if ARGV[9] ~= '' then
    redis.call('HSET', run, 'failed_step', ARGV[9])
    if ARGV[3] == 'failed' then stepx(run, ARGV[9], ARGV[4], 'failed') end
    if ARGV[10] ~= '' then redis.call('HSET', run, 'e:' .. ARGV[9], ARGV[10]) end
  end
  return 1
end
if st and ARGV[8] ~= '' and st == ARGV[3] and not redis.call('HGET', run, 'dlq_id') then
  if redis.call('HSETNX', run, 'dlq_claim', ARGV[8]) == 1 then return 1 end
  if redis.call('HGET', run, 'dlq_claim') == ARGV[8] then return 1 end
end
return 0
"""

# ARGV: tag, now, limit, next deadline. Returns run_id, redrives, run_id, redrives...
CLAIM = """
local tag = ARGV[1]
local inflight = tag .. ':inflight'
local ids = redis.call('ZRANGEBYSCORE', inflight, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local run = tag .. ':run:' .. id
  if redis.call('EXISTS', run) == 0 then
    redis.call('ZREM', inflight, id)
  else
    redis.call('ZADD', inflight, ARGV[4], id)
    local drop = {}
    local all = redis.call('HKEYS', run)
    for i = 1, #all do
      if string.sub(all[i], 1, 2) == 'r:' then drop[#drop + 1] = all[i] end
    end
    if #drop > 0 then redis.call('HDEL', run, unpack(drop)) end
    local n = redis.call('HINCRBY', run, 'redrives', 1)
    redis.call('HINCRBY', run, 'redrives_total', 1)
    redis.call('HINCRBY', tag .. ':counts', 'redriven', 1)
    out[#out + 1] = id
    out[#out + 1] = n
  end
end
return out
"""
