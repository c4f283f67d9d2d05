-- finish.lua: apply end-of-try reports, each fenced by (id, lease token). One call carries many reports.
-- ARGV: prefix, JSON list with one list per report: id, token, next status, release ('1'/'0'), run_at µs, error,
--       result JSON, and the attempt as three pieces (all null when none): its head as applied
--       ('{"outcome":…,"status_code":…,"error":…'), its head as a LOST record (model.not_applied), and the rest
--       of its fields (',…}'), snooze ('1'/'0': the try does not count, last_error kept unless given); all values
--       are strings
-- Returns a string with '1' per report applied and '0' per stale report. A stale report changes nothing but keeps
-- its attempt as a LOST record of its own claim (field = its token), unless the job is gone or that claim already
-- has a record that is not LOST (a repeated report of an applied try).
local now = now_us()
local out = {}
local woken = {}
for _, r in ipairs(cjson.decode(ARGV[2])) do
  local id, token, status, release = r[1], r[2], r[3], r[4] == '1'
  local run_at, err, result = nul(r[5]), nul(r[6]), nul(r[7])
  local head, lost_head, body = nul(r[8]), nul(r[9]), nul(r[10])
  local snooze = r[11] == '1'
  local j = load(id)
  if not j or j.status ~= 'processing' or j.lease_token ~= token then
    if j and head and not release then
      local old = redis.call('HGET', akey(id), token)
      if not old or is_lost_record(old) then redis.call('HSET', akey(id), token, lost_head .. body) end
    end
    out[#out + 1] = '0'
  else
    lane_release(j)
    local ch = { updated = num(now), lease_expires_at = false, worker_id = false, lease_token = false }
    if release then
      -- graceful shutdown: hand the job back without counting the try; run_at kept unless given (its place)
      ch.attempts = tostring(math.max(0, tonumber(j.attempts) - 1))
      ch.try_number = tostring(math.max(0, tonumber(j.try_number) - 1))
      if run_at then ch.run_at = run_at end
      if err then ch.last_error = err end
    else
      if status == 'completed' then
        ch.last_error = false
        ch.result = result or false
      elseif snooze then
        ch.attempts = tostring(math.max(0, tonumber(j.attempts) - 1))
        if err then ch.last_error = err end
      else
        ch.last_error = err or false
      end
      if status == 'pending' then
        ch.run_at = run_at or num(now)
        ch.cancel_requested = false
      end
      if head then redis.call('HSET', akey(id), token, head .. body) end
    end
    if status == 'pending' then ch.finished_at = false else ch.finished_at = num(now) end
    transition(j, status, ch)
    if status == 'pending' then
      note(woken, pending_enter(j, now))
    elseif j.skey then
      note(woken, lane_sync(j.namespace, j.skey, now))
    end
    out[#out + 1] = '1'
  end
end
wake(woken)
return table.concat(out)
