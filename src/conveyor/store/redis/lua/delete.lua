-- delete.lua: delete a job with its attempts (pending or failed; any state when forced).
-- ARGV: prefix, job id, force (1/0).  Returns {'ok', job JSON as it was} | {'missing'} | {'invalid', status}.
local id, force = ARGV[2], ARGV[3] == '1'
local j = load(id)
if not j then return { 'missing' } end
if not force and j.status ~= 'pending' and j.status ~= 'failed' then return { 'invalid', j.status } end
local before = cjson.encode(j)
local now = now_us()
local woken = {}
if j.status == 'pending' then
  note(woken, pending_leave(j, now))
end
erase(j)
if j.skey then
  lane_release(j)
  note(woken, lane_sync(j.namespace, j.skey, now))
end
wake(woken)
return { 'ok', before }
