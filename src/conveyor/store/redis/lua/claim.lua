-- claim.lua: claim up to `limit` due jobs in (priority, run_at, id) order across the chosen queues.
-- ARGV: prefix, worker_id, limit, lease µs, JSON {"queues": [...], "namespaces": [...] or null, "exclude": [...]}
-- Scheduled jobs that have come due move from sched to ready here, so no mover process has to be alive.
-- Returns a JSON list of the claimed jobs (their hash fields).
local worker, limit, lease_us = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local opts = cjson.decode(ARGV[5])
local function set_of(list)
  local s = {}
  if type(list) == 'table' then for _, v in ipairs(list) do s[v] = true end end
  return s
end
local queues, excluded = set_of(opts.queues), set_of(opts.exclude)
local only = nil
if type(opts.namespaces) == 'table' then only = set_of(opts.namespaces) end

local now = now_us()
local cands, room = {}, {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local ns, q = string.match(pair, '^([^:]+):(.+)$')
  if queues[q] and not excluded[ns] and (only == nil or only[ns])
      and redis.call('SISMEMBER', P .. ':qpaused', pair) == 0 then
    local base = P .. ':q:' .. pair .. ':'
    -- delayed and backing-off jobs that are now due become claimable
    local due = redis.call('ZRANGEBYSCORE', base .. 'sched', '-inf', num(now), 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      local f = redis.call('HMGET', jkey(id), 'priority', 'run_at')
      redis.call('ZREM', base .. 'sched', id)
      redis.call('ZADD', base .. 'ready', f[1], rmember(f[2], id))
    end
    local free = limit
    local cap = redis.call('HGET', P .. ':qconc', pair)
    if cap then
      local busy = counts_of(base, nil).processing or 0
      free = math.min(free, tonumber(cap) - busy)
    end
    if free > 0 then
      room[pair] = free
      local r = redis.call('ZRANGE', base .. 'ready', 0, free - 1, 'WITHSCORES')
      for i = 1, #r, 2 do
        cands[#cands + 1] = { prio = tonumber(r[i + 1]), m = r[i], pair = pair }
      end
    end
  end
end
if #cands == 0 then return '[]' end
if next(room, next(room)) ~= nil then  -- several queues: merge into one claim order
  table.sort(cands, function(a, b)
    if a.prio ~= b.prio then return a.prio < b.prio end
    return a.m < b.m
  end)
end
local out = {}
for _, c in ipairs(cands) do
  if #out >= limit then break end
  if room[c.pair] > 0 then
    room[c.pair] = room[c.pair] - 1
    local id = string.sub(c.m, 18)
    local j = load(id)
    start(j, worker, now, lease_us, true)
    out[#out + 1] = j
  end
end
return jobs_json(out)
