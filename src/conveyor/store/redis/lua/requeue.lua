-- requeue.lua: failed or cancelled -> pending, attempts reset, due now.
-- ARGV: prefix, job id.  Returns {'ok', job JSON} | {'missing'} | {'invalid', status} | {'unique', holder id}.
local id = ARGV[2]
local j = load(id)
if not j then return { 'missing' } end
if j.status ~= 'failed' and j.status ~= 'cancelled' then return { 'invalid', j.status } end
if j.unique_key then
  local holder = redis.call('HGET', P .. ':uniq:' .. j.namespace, j.unique_key)
  if holder and holder ~= id then return { 'unique', holder } end
end
local now = now_us()
if j.unique_hash then  -- a requeued job leaves its `unique=` rule behind (never a conflict)
  if redis.call('HGET', P .. ':uniqh:' .. j.namespace, j.unique_hash) == id then
    redis.call('HDEL', P .. ':uniqh:' .. j.namespace, j.unique_hash)
  end
  put(j, { unique_hash = false, unique_states = false })
end
transition(j, 'pending', {
  attempts = '0', run_at = num(now), last_error = false, finished_at = false, cancel_requested = false,
  updated = num(now),
})
local woken = {}
note(woken, pending_enter(j, now))
wake(woken)
return { 'ok', cjson.encode(j) }
