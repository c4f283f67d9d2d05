-- list.lua (read-only): jobs matching a filter, newest first (created DESC, id DESC), with the total.
-- ARGV: prefix, namespace, queue, task, status, user_id (each opt), limit, offset, then every status name.
-- Returns {total, JSON list of jobs}. Without a task or user filter the total comes from the by-status sets' sizes and
-- only the first offset+limit entries of each set are read; task/user filters scan their candidate sets.
local ns_f, q_f, task, status, user = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6])
local limit, offset = tonumber(ARGV[7]), tonumber(ARGV[8])
local statuses = {}
if status then statuses = { status } else for i = 9, #ARGV do statuses[#statuses + 1] = ARGV[i] end end
local want = offset + limit

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
          found[#found + 1] = { tonumber(r[i + 1]), r[i] }
        end
      end
    end
  end
  total = #found
elseif task then
  for _, key in ipairs(sets) do
    local r = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for i = 1, #r, 2 do
      if redis.call('HGET', jkey(r[i]), 'task') == task then found[#found + 1] = { tonumber(r[i + 1]), r[i] } end
    end
  end
  total = #found
else
  for _, key in ipairs(sets) do
    local n = redis.call('ZCARD', key)
    if n > 0 then
      total = total + n
      local r = redis.call('ZREVRANGE', key, 0, want - 1, 'WITHSCORES')
      for i = 1, #r, 2 do found[#found + 1] = { tonumber(r[i + 1]), r[i] } end
    end
  end
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] > b[2]
end)
local page = {}
for i = offset + 1, math.min(#found, want) do page[#page + 1] = load(found[i][2]) end
return { total, jobs_json(page) }
