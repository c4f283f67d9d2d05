-- cancel.lua: pending -> cancelled; processing -> cancel_requested (its worker stops it).
-- ARGV: prefix, job id.  Returns {'ok', job JSON} | {'missing'} | {'invalid', status}.
local id = ARGV[2]
local j = load(id)
if not j then return { 'missing' } end
local now = now_us()
if j.status == 'pending' then
  pending_leave(j, now)
  transition(j, 'cancelled', { finished_at = num(now), updated = num(now) })
elseif j.status == 'processing' then
  put(j, { cancel_requested = '1', updated = num(now) })
else
  return { 'invalid', j.status }
end
return { 'ok', cjson.encode(j) }
