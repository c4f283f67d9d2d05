-- rescue.lua: give back jobs whose lease expired, recording a LOST attempt (status code 0) for each under its
-- claim's token. A rescued job keeps its run_at: it goes back to its place in the claim order.
-- ARGV: prefix, now µs ('' = the server clock), limit
-- Returns a JSON list of the rescued jobs after the change.
local now = opt(ARGV[2]) and tonumber(opt(ARGV[2])) or now_us()
local limit = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', num(now), 'LIMIT', 0, limit)
local out = {}
local woken = {}
for _, id in ipairs(expired) do
  local j = load(id)
  local worker = j.worker_id or ''
  local err = 'lease expired: worker ' .. worker .. ' stopped heartbeating'
  local rec = '{"outcome":"lost","status_code":0,"error":' .. cjson.encode(err)
    .. ',"job_id":' .. cjson.encode(id) .. ',"try_number":' .. j.try_number
    .. ',"started_at":' .. (j.started_at or num(now)) .. ',"finished_at":' .. num(now)
    .. ',"worker_id":' .. (j.worker_id and cjson.encode(j.worker_id) or 'null')
    .. ',"result":null,"traceback":null}'
  redis.call('HSET', akey(id), j.lease_token or ('try-' .. j.try_number), rec)
  lane_release(j)
  local ch = { lease_expires_at = false, worker_id = false, lease_token = false, last_error = err, updated = num(now) }
  local status
  if tonumber(j.attempts) < tonumber(j.max_attempts) then
    status = 'pending'
  else
    status = 'failed'
    ch.finished_at = num(now)
  end
  transition(j, status, ch)
  if status == 'pending' then
    note(woken, pending_enter(j, now))
  elseif j.skey then
    note(woken, lane_sync(j.namespace, j.skey, now))
  end
  out[#out + 1] = j
end
wake(woken)
return jobs_json(out)
