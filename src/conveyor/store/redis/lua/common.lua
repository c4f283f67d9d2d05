-- common.lua: helpers shared by every script. The store prepends this file to each script before registering it,
-- so each script stays one atomic EVALSHA while the index bookkeeping lives in one place.
-- ARGV[1] is always the key prefix. The key layout is documented in keys.py (keep both in step).
-- Times are integer microseconds since the Unix epoch (exact in Lua's doubles until the year 2255).

local P = ARGV[1]

local function jkey(id) return P .. ':job:' .. id end
local function akey(id) return P .. ':att:' .. id end
local function qkey(ns, q, part) return P .. ':q:' .. ns .. ':' .. q .. ':' .. part end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- integers as strings without exponent notation (tostring would print 1.7e+15)
local function num(n) return string.format('%.0f', n) end

-- member of a queue's ready set: the score is the priority, and equal scores sort by member, i.e. (run_at, id)
local function rmember(run_at, id) return string.format('%016.0f', tonumber(run_at)) .. ':' .. id end

local function load(id)
  local flat = redis.call('HGETALL', jkey(id))
  if #flat == 0 then return nil end
  local j = {}
  for i = 1, #flat, 2 do j[flat[i]] = flat[i + 1] end
  return j
end

-- write changed fields; a value of false deletes the field (the job attribute becomes None)
local function put(j, changes)
  local sets, dels = {}, {}
  for k, v in pairs(changes) do
    if v == false then
      if j[k] ~= nil then dels[#dels + 1] = k end
      j[k] = nil
    else
      sets[#sets + 1] = k
      sets[#sets + 1] = v
      j[k] = v
    end
  end
  if #sets > 0 then redis.call('HSET', jkey(j.id), unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', jkey(j.id), unpack(dels)) end
end

-- counters per (status, task) only: readers sum them per status, which halves the writes on the hot path
local function count(j, status, delta)
  redis.call('HINCRBY', qkey(j.namespace, j.queue, 'n'), status .. '|' .. j.task, delta)
end

-- {status -> count} of a queue, for one task or summed over all tasks
local function counts_of(ns_q_base, task)
  local c = {}
  local flat = redis.call('HGETALL', ns_q_base .. 'n')
  for i = 1, #flat, 2 do
    local status, t = string.match(flat[i], '^([^|]+)|(.*)$')
    if status and (not task or t == task) then c[status] = (c[status] or 0) + tonumber(flat[i + 1]) end
  end
  return c
end

local ACTIVE = { pending = true, processing = true }
local UNIQUE_BIT = { pending = 1, processing = 2, completed = 4, failed = 8, cancelled = 16 }  -- model's bits
local FINAL_SET = { completed = 'completed', failed = 'failed', cancelled = 'failed' }
-- Finished jobs by finished_at, per namespace and kind (completed | failed, which holds cancelled too): prune
-- works namespace by namespace, each with its own retention, without stepping over other namespaces' jobs.
local function done_key(ns, kind) return P .. ':done:' .. ns .. ':' .. kind end

-- Move a job to status `new` (writing `ch`, the other changed fields, in the same HSET) and keep every by-status
-- index in step: counters, the by-status listing sets, the pending-by-run_at set, the lease set, the finished
-- sets (prune) and the unique-key claim. new = nil: the job leaves every index (delete; nothing is written).
local function transition(j, new, ch)
  local old = j.status
  local ns, q, id = j.namespace, j.queue, j.id
  if new then
    ch = ch or {}
    ch.status = new
    put(j, ch)
  end
  if old then
    count(j, old, -1)
    redis.call('ZREM', qkey(ns, q, 's:' .. old), id)
    if old == 'pending' then redis.call('ZREM', qkey(ns, q, 'pend'), id) end
    if old == 'processing' then redis.call('ZREM', P .. ':leases', id) end
    if FINAL_SET[old] then redis.call('ZREM', done_key(ns, FINAL_SET[old]), id) end
  end
  if new then
    count(j, new, 1)
    redis.call('ZADD', qkey(ns, q, 's:' .. new), j.created, id)
    if new == 'pending' then redis.call('ZADD', qkey(ns, q, 'pend'), j.run_at, id) end
    if new == 'processing' then redis.call('ZADD', P .. ':leases', j.lease_expires_at, id) end
    if FINAL_SET[new] then redis.call('ZADD', done_key(ns, FINAL_SET[new]), j.finished_at, id) end
  end
  if j.concurrency_key and (old == 'processing' or new == 'processing') and old ~= new then
    local kb = P .. ':kbusy:' .. ns .. ':' .. q
    if new == 'processing' then
      redis.call('HINCRBY', kb, j.concurrency_key, 1)
    elseif redis.call('HINCRBY', kb, j.concurrency_key, -1) <= 0 then
      redis.call('HDEL', kb, j.concurrency_key)
    end
  end
  if j.unique_hash then  -- `unique=`: the job holds its hash while its status is among its own states (bits)
    local hk = P .. ':uniqh:' .. ns
    local bit = new and UNIQUE_BIT[new]
    if bit and math.floor(tonumber(j.unique_states) / bit) % 2 == 1 then
      redis.call('HSETNX', hk, j.unique_hash, id)
    elseif redis.call('HGET', hk, j.unique_hash) == id then
      redis.call('HDEL', hk, j.unique_hash)
    end
  end
  if j.unique_key then
    local uk = P .. ':uniq:' .. ns
    if ACTIVE[old] and not ACTIVE[new] then
      if redis.call('HGET', uk, j.unique_key) == id then redis.call('HDEL', uk, j.unique_key) end
    elseif ACTIVE[new] and not ACTIVE[old] then
      redis.call('HSETNX', uk, j.unique_key, id)
    end
  end
  j.status = new
end

-- ---- the claim index: a queue's ready (due) and sched (future) sets, one of each per task -------------------------
-- Per (pair, task) so that a claim (and next_due) reads only the tasks its worker serves: jobs of other tasks are
-- never walked, however many wait in front. q:<pair>:tasks lists the tasks that ever had jobs in the pair.

local function ready_key(ns, q, task) return qkey(ns, q, 'ready:' .. task) end
local function sched_key(ns, q, task) return qkey(ns, q, 'sched:' .. task) end

-- returns the job's queue when it is claimable now (worth a wake-up), else false
local function qindex(j, now)
  if tonumber(j.run_at) <= now then
    redis.call('ZADD', ready_key(j.namespace, j.queue, j.task), j.priority, rmember(j.run_at, j.id))
    return j.queue
  end
  redis.call('ZADD', sched_key(j.namespace, j.queue, j.task), j.run_at, j.id)
  return false
end

local function qunindex(j)
  redis.call('ZREM', ready_key(j.namespace, j.queue, j.task), rmember(j.run_at, j.id))
  redis.call('ZREM', sched_key(j.namespace, j.queue, j.task), j.id)
end

local function brief(id)
  local f = redis.call('HMGET', jkey(id), 'namespace', 'queue', 'priority', 'run_at', 'task')
  return { id = id, namespace = f[1], queue = f[2], priority = f[3], run_at = f[4], task = f[5] }
end

-- ---- serial lanes -------------------------------------------------------------------------------------------
-- A lane's pending jobs sit in lane:<ns>:<skey> (score priority, member id: FIFO head first). Only the head of an
-- idle lane is in its queue's claim index; lanest:<ns>:<skey> records `busy` (the processing job) and `head`
-- (the job currently indexed). lane_sync restores that invariant after any change and returns the queue of the
-- due head it indexed (worth a wake-up), else false.

local function lane_keys(ns, skey) return P .. ':lane:' .. ns .. ':' .. skey, P .. ':lanest:' .. ns .. ':' .. skey end

local function lane_sync(ns, skey, now)
  local lk, sk = lane_keys(ns, skey)
  local st = redis.call('HMGET', sk, 'busy', 'head')
  local busy, head = st[1], st[2]
  local want = false
  if not busy then want = redis.call('ZRANGE', lk, 0, 0)[1] or false end
  if head == want then return false end
  if head then qunindex(brief(head)) end
  if want then
    redis.call('HSET', sk, 'head', want)
    return qindex(brief(want), now)
  end
  redis.call('HDEL', sk, 'head')
  return false
end

local function is_indexed(j)
  if not j.skey then return true end
  local _, sk = lane_keys(j.namespace, j.skey)
  return redis.call('HGET', sk, 'head') == j.id
end

-- a job (already status pending) enters the claim structures; returns its queue when it is claimable now
local function pending_enter(j, now)
  if j.skey then
    local lk = lane_keys(j.namespace, j.skey)
    redis.call('ZADD', lk, j.priority, j.id)
    return lane_sync(j.namespace, j.skey, now)
  end
  return qindex(j, now)
end

-- a pending job leaves the claim structures (claimed elsewhere, cancelled, deleted)
local function pending_leave(j, now)
  if j.skey then
    local lk, sk = lane_keys(j.namespace, j.skey)
    redis.call('ZREM', lk, j.id)
    if redis.call('HGET', sk, 'head') == j.id then
      qunindex(j)
      redis.call('HDEL', sk, 'head')
    end
    return lane_sync(j.namespace, j.skey, now)
  end
  qunindex(j)
  return false
end

-- pending -> processing under the fencing token `token` (from_ready: the caller knows the job sits in its ready set)
local function start(j, worker, now, lease_us, token, from_ready)
  if from_ready then
    redis.call('ZREM', ready_key(j.namespace, j.queue, j.task), rmember(j.run_at, j.id))
  else
    qunindex(j)
  end
  if j.skey then
    local lk, sk = lane_keys(j.namespace, j.skey)
    redis.call('ZREM', lk, j.id)
    redis.call('HDEL', sk, 'head')
    redis.call('HSET', sk, 'busy', j.id)
  end
  transition(j, 'processing', {
    attempts = tostring(tonumber(j.attempts) + 1),
    try_number = tostring(tonumber(j.try_number) + 1),
    started_at = num(now),
    worker_id = worker,
    lease_expires_at = num(now + lease_us),
    updated = num(now),
    cancel_requested = false,
    lease_token = token,
  })
end

-- a processing job stops holding its lane (the caller then re-enters it as pending or syncs the lane)
local function lane_release(j)
  if j.skey then
    local _, sk = lane_keys(j.namespace, j.skey)
    if redis.call('HGET', sk, 'busy') == j.id then redis.call('HDEL', sk, 'busy') end
  end
end

-- remove every trace of a job (delete, prune); the caller has taken it out of the claim structures
local function erase(j)
  transition(j, nil)
  if j.user_id then redis.call('ZREM', P .. ':user:' .. j.namespace .. ':' .. j.user_id, j.id) end
  redis.call('DEL', jkey(j.id), akey(j.id))
end

-- ---- claiming ----------------------------------------------------------------------------------------------

local function set_of(list)
  local s = {}
  if type(list) == 'table' then for _, v in ipairs(list) do s[v] = true end end
  return s
end

-- The scope of a claim: opts is {"queues": [...], "namespaces": [...] or null, "exclude": [...], "tasks": [...] or
-- null} (decoded JSON). in_scope(pair) tells whether the claim serves that '<namespace>:<queue>' pair; served(task)
-- whether it serves the task (null: any task). Namespaces whose settings have auto_run off (P:nsoff, kept by
-- put_namespace.lua) are never in scope: the claim itself enforces them, no caller's cache.
local function claim_scope(opts)
  local queues, excluded = set_of(opts.queues), set_of(opts.exclude)
  local only = nil
  if type(opts.namespaces) == 'table' then only = set_of(opts.namespaces) end
  local tasks = nil
  if type(opts.tasks) == 'table' then tasks = set_of(opts.tasks) end
  local in_scope = function(pair)
    local ns, q = string.match(pair, '^([^:]+):(.+)$')
    return queues[q] and not excluded[ns] and (only == nil or only[ns])
      and redis.call('SISMEMBER', P .. ':nsoff', ns) == 0
  end
  local served = function(task) return tasks == nil or tasks[task] == true end
  return in_scope, served
end

-- ---- rate limits: a GCRA per rate-limited pair -------------------------------------------------------------------
-- P:qrate holds `<interval µs>|<tolerance µs>` per pair (written with the settings), P:qtat the theoretical arrival
-- time in µs (the limiter's state). The formula is model.rate_allowance / rate_advance.

-- returns (allowed now, µs until the next one, interval, stored tat), or nil when the pair has no rate limit
local function rate_state(pair, now)
  local r = redis.call('HGET', P .. ':qrate', pair)
  if not r then return nil end
  local interval, tol = string.match(r, '^(%d+)|(%d+)$')
  interval, tol = tonumber(interval), tonumber(tol)
  local tat = tonumber(redis.call('HGET', P .. ':qtat', pair) or '0')
  local from = tat
  if from < now then from = now end
  local slack = now + tol - from
  if slack < 0 then return 0, -slack, interval, tat end
  return math.floor(slack / interval) + 1, 0, interval, tat
end

local function rate_advance(pair, now, interval, tat, taken)
  if tat < now then tat = now end
  redis.call('HSET', P .. ':qtat', pair, num(tat + taken * interval))
end

-- ---- rate limits per key (a pair with a rate_key) -----------------------------------------------------------------
-- P:qrkey holds a rate-limited pair's rate_key; P:rtat:<pair> is a ZSET: key -> its theoretical arrival time (µs)
-- while its bucket is not full again. claim_due drops the members whose time has passed, so the set holds at most
-- the keys claimed within one burst's time. The key of a job is model.rate_key_value.

local function rate_key_of(kind, id)
  local v = nil
  if kind == 'user_id' or kind == 'group_key' or kind == 'concurrency_key' then
    v = redis.call('HGET', jkey(id), kind)
  else
    local text = redis.call('HGET', jkey(id), 'payload')
    local ok, p = false, nil
    if text then ok, p = pcall(cjson.decode, text) end
    if ok and type(p) == 'table' then
      v = p[string.sub(kind, 9)]
      if type(v) == 'number' then
        if v == math.floor(v) and math.abs(v) < 9007199254740992 then
          if v == 0 then v = 0 end  -- no '-0'
          v = string.format('%.0f', v)
        else
          v = nil
        end
      elseif type(v) ~= 'string' then
        v = nil
      end
    end
  end
  return v or ''
end

-- the pair's per-key limiter for this script (nil when the pair has no rate limit or no rate_key); `forget` drops
-- the keys whose bucket is full again (claim_due; next_due only reads)
local function key_rates(pair, now, forget)
  local r = redis.call('HGET', P .. ':qrate', pair)
  if not r then return nil end
  local kind = redis.call('HGET', P .. ':qrkey', pair)
  if not kind then return nil end
  local interval, tol = string.match(r, '^(%d+)|(%d+)$')
  local zset = P .. ':rtat:' .. pair
  if forget then redis.call('ZREMRANGEBYSCORE', zset, '-inf', num(now)) end
  return { kind = kind, interval = tonumber(interval), tol = tonumber(tol), zset = zset, now = now,
           tats = {}, spent = {}, started = {} }
end

-- claims a key may still start now: its tokens less what this script already set aside for it
local function key_room(kr, key)
  local tat = kr.tats[key]
  if tat == nil then
    tat = tonumber(redis.call('ZSCORE', kr.zset, key) or '0')
    kr.tats[key] = tat
  end
  local from = tat
  if from < kr.now then from = kr.now end
  local slack = kr.now + kr.tol - from
  if slack < 0 then return 0 end
  return math.floor(slack / kr.interval) + 1 - (kr.spent[key] or 0)
end

local function key_rates_advance(kr)
  for key, n in pairs(kr.started) do
    local tat = kr.tats[key]
    if tat < kr.now then tat = kr.now end
    redis.call('ZADD', kr.zset, num(tat + n * kr.interval), key)
  end
end

-- ---- concurrency per key ------------------------------------------------------------------------------------------
-- P:qkey holds a pair's limit of processing jobs per concurrency key, P:kbusy:<pair> its processing jobs per key
-- (kept by transition). A keyed pair's ready set is walked past the members of keys at their limit, at most
-- KEY_SCAN members per claim: a blocked key's backlog longer than that hides the jobs behind it until it drains.
local KEY_SCAN = 2000

-- up to `want` ready members of a keyed pair's task whose concurrency key has room (key_cap, or nil for no limit)
-- and whose rate key has a token (kr from key_rates, or nil), in claim order; returns {member, score, rate key}
local function keyed_ready(base, task, pair, want, key_cap, kr)
  local busy = {}
  if key_cap then
    local flat = redis.call('HGETALL', P .. ':kbusy:' .. pair)
    for i = 1, #flat, 2 do busy[flat[i]] = tonumber(flat[i + 1]) end
  end
  local out, seen = {}, 0
  local page = math.max(want * 2, 32)
  while #out < want and seen < KEY_SCAN do
    local r = redis.call('ZRANGE', base .. 'ready:' .. task, seen, seen + page - 1, 'WITHSCORES')
    if #r == 0 then break end
    for i = 1, #r, 2 do
      local id = string.sub(r[i], 18)
      local ok, rk = true, nil
      if kr then
        rk = rate_key_of(kr.kind, id)
        ok = key_room(kr, rk) > 0
      end
      local ck = nil
      if ok and key_cap then
        ck = redis.call('HGET', jkey(id), 'concurrency_key')
        ok = not ck or (busy[ck] or 0) < key_cap
      end
      if ok then
        if ck then busy[ck] = (busy[ck] or 0) + 1 end
        if rk then kr.spent[rk] = (kr.spent[rk] or 0) + 1 end
        out[#out + 1] = { r[i], r[i + 1], rk }
      end
      if #out >= want then break end
    end
    seen = seen + page
  end
  return out
end

-- the first {id, run_at} of a keyed pair's task's sched set whose key has room (next_due), or {}
local function keyed_sched(base, task, pair, key_cap)
  local seen, page = 0, 64
  while seen < KEY_SCAN do
    local r = redis.call('ZRANGE', base .. 'sched:' .. task, seen, seen + page - 1, 'WITHSCORES')
    if #r == 0 then break end
    for i = 1, #r, 2 do
      local ck = redis.call('HGET', jkey(r[i]), 'concurrency_key')
      if not ck or tonumber(redis.call('HGET', P .. ':kbusy:' .. pair, ck) or '0') < key_cap then
        return { r[i], r[i + 1] }
      end
    end
    seen = seen + page
  end
  return {}
end

-- Claim up to `limit` due jobs in (priority, run_at, id) order across the pairs in scope and the tasks served, for
-- `worker`; `tokens` holds one fresh 32-hex-digit fencing token per job it may claim (drawn by the caller from the
-- OS: math.random is no source of uniqueness). Scheduled jobs that have come due move from sched to ready here, so
-- no mover process has to be alive. Used by claim.lua and by enqueue.lua when it claims for an idle worker of the
-- enqueuing process (hand-off).
local function claim_due(worker, limit, lease_us, in_scope, served, now, tokens)
  local cands, room, lists = {}, {}, 0
  local rated, keyed_rates = {}, {}
  local any_rated = redis.call('EXISTS', P .. ':qrate') == 1
  for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
    if in_scope(pair) and redis.call('SISMEMBER', P .. ':qpaused', pair) == 0 then
      local base = P .. ':q:' .. pair .. ':'
      local free = limit
      local cap = redis.call('HGET', P .. ':qconc', pair)
      if cap then
        local busy = counts_of(base, nil).processing or 0
        free = math.min(free, tonumber(cap) - busy)
      end
      local kr = nil
      if any_rated and free > 0 then kr = key_rates(pair, now, true) end
      if kr then keyed_rates[pair] = kr end
      if any_rated and free > 0 and not kr then
        local allowed, _, interval, tat = rate_state(pair, now)
        if allowed then
          free = math.min(free, allowed)
          rated[pair] = { interval = interval, tat = tat, taken = 0 }
        end
      end
      if free > 0 then
        room[pair] = free
        for _, task in ipairs(redis.call('SMEMBERS', base .. 'tasks')) do
          if served(task) then
            -- delayed and backing-off jobs that are now due become claimable
            local due = redis.call('ZRANGEBYSCORE', base .. 'sched:' .. task, '-inf', num(now), 'LIMIT', 0, 1000)
            for _, id in ipairs(due) do
              local f = redis.call('HMGET', jkey(id), 'priority', 'run_at')
              redis.call('ZREM', base .. 'sched:' .. task, id)
              redis.call('ZADD', base .. 'ready:' .. task, f[1], rmember(f[2], id))
            end
            local key_cap = redis.call('HGET', P .. ':qkey', pair)
            if key_cap or kr then
              local r = keyed_ready(base, task, pair, free, key_cap and tonumber(key_cap), kr)
              if #r > 0 then lists = lists + 1 end
              for _, c in ipairs(r) do
                cands[#cands + 1] = { prio = tonumber(c[2]), m = c[1], pair = pair, rk = c[3] }
              end
            else
              local r = redis.call('ZRANGE', base .. 'ready:' .. task, 0, free - 1, 'WITHSCORES')
              if #r > 0 then lists = lists + 1 end
              for i = 1, #r, 2 do
                cands[#cands + 1] = { prio = tonumber(r[i + 1]), m = r[i], pair = pair }
              end
            end
          end
        end
      end
    end
  end
  local out = {}
  if #cands == 0 then return out end
  if lists > 1 then  -- several ready sets: merge into one claim order
    table.sort(cands, function(a, b)
      if a.prio ~= b.prio then return a.prio < b.prio end
      return a.m < b.m
    end)
  end
  for _, c in ipairs(cands) do
    if #out >= limit then break end
    if room[c.pair] > 0 then
      room[c.pair] = room[c.pair] - 1
      local id = string.sub(c.m, 18)
      local j = load(id)
      local n = #out
      start(j, worker, now, lease_us, string.sub(tokens, 32 * n + 1, 32 * n + 32), true)
      out[#out + 1] = j
      if rated[c.pair] then rated[c.pair].taken = rated[c.pair].taken + 1 end
      if c.rk then
        local started = keyed_rates[c.pair].started
        started[c.rk] = (started[c.rk] or 0) + 1
      end
    end
  end
  for pair, r in pairs(rated) do
    if r.taken > 0 then rate_advance(pair, now, r.interval, r.tat, r.taken) end
  end
  for _, kr in pairs(keyed_rates) do key_rates_advance(kr) end
  return out
end

-- An attempt record is stored as JSON whose first key is its outcome (see encode_attempt in store.py), so a LOST
-- record is recognised without decoding (cjson would round the microsecond times).
local function is_lost_record(text) return string.sub(text, 1, 18) == '{"outcome":"lost",' end

-- Wake idle workers in every process that serve a queue: `woken` maps queue -> jobs that became claimable. One
-- token per job (at most 8 per call) goes to wake:<queue>; the list is capped so tokens never pile up while every
-- worker is busy. Per-queue lists keep a worker of another queue from taking the token.
local function note(woken, queue)
  if queue then woken[queue] = (woken[queue] or 0) + 1 end
end

local function wake(woken)
  for queue, n in pairs(woken) do
    local tokens = {}
    for i = 1, math.min(n, 8) do tokens[i] = '1' end
    local w = P .. ':wake:' .. queue
    redis.call('LPUSH', w, unpack(tokens))
    redis.call('LTRIM', w, 0, 63)
  end
end

-- Replies carry jobs as JSON objects of their hash fields (all strings): one bulk string per reply parses far
-- faster in redis-py than nested arrays of fields.
local function jobs_json(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end


-- optional string arguments arrive as '' (None) or '=' .. value
local function opt(s)
  if s == nil or s == '' then return nil end
  return string.sub(s, 2)
end

-- batches arrive as one JSON argument (redis-py packs one big argument far faster than thousands of small
-- ones); every value in them is a string or null, so no number loses precision in cjson
local function nul(v)
  if v == cjson.null then return nil end
  return v
end
