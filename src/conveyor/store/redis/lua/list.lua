-- list.lua (read-only): jobs matching a filter by creation time, with the total and a keyset seek.
-- ARGV: prefix, namespace, queue, task, status, user_id (each opt), limit, offset, order, after_score, after_id,
-- then every status name. order: 'desc' (newest first: created DESC, id DESC), 'asc' (created ASC, id ASC), or
-- 'ids' (every candidate id, unordered: the store filters and sorts them itself for searches and other orders).
-- after_score/after_id (empty: first page): the page starts right after that key in the order.
-- Returns {total, JSON list of jobs, more (1/0)} — or {total, ids} for 'ids'. Without a task or user filter the
-- total comes from the by-status sets' sizes and each set is read from the key on, `offset + limit + 1` entries at
-- most (a seek, whatever the depth); task/user filters scan their candidate sets.
local ns_f, q_f, task, status, user = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6])
local limit, offset, order = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local after_score, after_id = tonumber(ARGV[10]), ARGV[11]
local statuses = {}
if status then statuses = { status } else for i = 12, #ARGV do statuses[#statuses + 1] = ARGV[i] end end
local want = offset + limit + 1
local desc = order ~= 'asc'

-- whether {score, id} a comes before b in the order
local function before(a, b)
  if a[1] ~= b[1] then
    if desc then return a[1] > b[1] end
    return a[1] < b[1]
  end
  if desc then return a[2] > b[2] end
  return a[2] < b[2]
end
local key = after_score and { after_score, after_id } or nil

local pairs_ok = {}
local sets = {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local ns, q = string.match(pair, '^([^:]+):(.+)$')
  if (not ns_f or ns == ns_f) and (not q_f or q == q_f) then
    pairs_ok[pair] = ns
    for _, s in ipairs(statuses) do sets[#sets + 1] = P .. ':q:' .. pair .. ':s:' .. s end
  end
end

local total = 0
local found = {}  -- {score, id}
local function keep(score, id)
  if key == nil or before(key, { score, id }) then found[#found + 1] = { score, id } end
end
if user then
  local seen_ns = {}
  local stat_ok = {}
  for _, s in ipairs(statuses) do stat_ok[s] = true end
  for pair, ns in pairs(pairs_ok) do
    if not seen_ns[ns] then
      seen_ns[ns] = true
      local r = redis.call('ZRANGE', P .. ':user:' .. ns .. ':' .. user, 0, -1, 'WITHSCORES')
      for i = 1, #r, 2 do
        local f = redis.call('HMGET', jkey(r[i]), 'namespace', 'queue', 'status', 'task')
        if pairs_ok[f[1] .. ':' .. f[2]] and stat_ok[f[3]] and (not task or f[4] == task) then
          total = total + 1
          keep(tonumber(r[i + 1]), r[i])
        end
      end
    end
  end
elseif task or order == 'ids' then
  for _, k in ipairs(sets) do
    local r = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    for i = 1, #r, 2 do
      if not task or redis.call('HGET', jkey(r[i]), 'task') == task then
        total = total + 1
        keep(tonumber(r[i + 1]), r[i])
      end
    end
  end
else
  for _, k in ipairs(sets) do
    local n = redis.call('ZCARD', k)
    if n > 0 then
      total = total + n
      local r
      if key == nil then
        if desc then r = redis.call('ZREVRANGE', k, 0, want - 1, 'WITHSCORES')
        else r = redis.call('ZRANGE', k, 0, want - 1, 'WITHSCORES') end
      else
        -- jobs created at the key's instant (a batch shares one) are compared by id; the rest is a range seek
        local ties = redis.call('ZRANGEBYSCORE', k, ARGV[10], ARGV[10])
        for _, id in ipairs(ties) do keep(after_score, id) end
        if desc then r = redis.call('ZREVRANGEBYSCORE', k, '(' .. ARGV[10], '-inf', 'WITHSCORES', 'LIMIT', 0, want)
        else r = redis.call('ZRANGEBYSCORE', k, '(' .. ARGV[10], '+inf', 'WITHSCORES', 'LIMIT', 0, want) end
      end
      for i = 1, #r, 2 do found[#found + 1] = { tonumber(r[i + 1]), r[i] } end
    end
  end
end
if order == 'ids' then
  local out = {}
  for i, f in ipairs(found) do out[i] = f[2] end
  return { total, out }
end
table.sort(found, before)
local page = {}
for i = offset + 1, math.min(#found, offset + limit) do page[#page + 1] = load(found[i][2]) end
local more = 0
if #found > offset + limit and #page > 0 then more = 1 end
return { total, jobs_json(page), more }
