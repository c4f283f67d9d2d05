-- restore.lua: put jobs back as they were (any status but processing) with their attempt records, all or nothing.
-- ARGV: prefix, JSON list of {id, namespace, status, unique (the unique key of an active job, or null), fields
-- (flat list of hash field, value: every stored field but status), attempts (flat list of hash field, record)}.
-- Returns {'ok'} | {'exists', id} | {'unique', id, holder id}; nothing is stored unless 'ok'.
local rows = cjson.decode(ARGV[2])
for _, r in ipairs(rows) do
  if redis.call('EXISTS', jkey(r.id)) == 1 then return { 'exists', r.id } end
end
for _, r in ipairs(rows) do
  local uk = nul(r.unique)
  if uk then
    local holder = redis.call('HGET', P .. ':uniq:' .. r.namespace, uk)
    if holder then return { 'unique', r.id, holder } end
  end
end
local now = now_us()
local woken, later = {}, {}
for _, r in ipairs(rows) do
  redis.call('HSET', jkey(r.id), unpack(r.fields))
  local j = load(r.id)
  if j.group_key then j.skey = 'g:' .. j.group_key elseif j.user_id then j.skey = 'u:' .. j.user_id end
  if j.skey then redis.call('HSET', jkey(j.id), 'skey', j.skey) end
  transition(j, r.status)
  local pair = j.namespace .. ':' .. j.queue
  redis.call('SADD', P .. ':pairs', pair)
  redis.call('SADD', P .. ':q:' .. pair .. ':tasks', j.task)
  if j.user_id then redis.call('ZADD', P .. ':user:' .. j.namespace .. ':' .. j.user_id, j.created, j.id) end
  if r.status == 'pending' then
    local q = pending_enter(j, now)
    if q then note(woken, q) elseif tonumber(j.run_at) > now then note(later, j.queue) end
  end
  if #r.attempts > 0 then redis.call('HSET', akey(r.id), unpack(r.attempts)) end
end
for queue, n in pairs(later) do woken[queue] = (woken[queue] or 0) + n end
wake(woken)
return { 'ok' }
