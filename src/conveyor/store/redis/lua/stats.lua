-- stats.lua (read-only): job counts by status over the matching queues, plus `scheduled` (pending, not yet due).
-- ARGV: prefix, namespace (opt), queue (opt), task (opt), then status names.
-- Returns one row per matching (namespace, queue): {pair, count per status..., scheduled, paused, concurrency}.
-- Pairs without jobs and without settings are left out.
local ns_f, q_f, task = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4])
local statuses = {}
for i = 5, #ARGV do statuses[#statuses + 1] = ARGV[i] end
local now = now_us()
local rows = {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local ns, q = string.match(pair, '^([^:]+):(.+)$')
  if (not ns_f or ns == ns_f) and (not q_f or q == q_f) then
    local base = P .. ':q:' .. pair .. ':'
    local c = counts_of(base, task)
    local row = { pair }
    local total = 0
    for i = 1, #statuses do
      local v = c[statuses[i]] or 0
      row[#row + 1] = v
      total = total + v
    end
    local sched = 0
    if task then
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', base .. 'pend', '(' .. num(now), '+inf')) do
        if redis.call('HGET', jkey(id), 'task') == task then sched = sched + 1 end
      end
    else
      sched = redis.call('ZCOUNT', base .. 'pend', '(' .. num(now), '+inf')
    end
    row[#row + 1] = sched
    local paused = redis.call('SISMEMBER', P .. ':qpaused', pair)
    local conc = redis.call('HGET', P .. ':qconc', pair)
    local has_settings = redis.call('HEXISTS', P .. ':qset', pair)
    row[#row + 1] = paused
    row[#row + 1] = conc and tonumber(conc) or -1
    if total > 0 or has_settings == 1 then rows[#rows + 1] = row end
  end
end
return rows
