-- cancel.lua: pending -> cancelled; processing -> cancel_requested (its worker stops it).
-- ARGV: prefix, job id.  Returns {'ok', HGETALL} | {'missing'} | {'invalid', status}.
local id = ARGV[2]
local j = load(id)
if not j then return { 'missing' } end
local now = now_us()
if j.status == 'pending' then
  pending_leave(j, now)
  put(j, { finished_at = num(now), updated = num(now) })
  set_status(j, 'cancelled')
elseif j.status == 'processing' then
  put(j, { cancel_requested = '1', updated = num(now) })
else
  return { 'invalid', j.status }
end
return { 'ok', flat(id) }
