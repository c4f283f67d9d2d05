-- heartbeat.lua: extend held leases to now + lease (fenced by try_number).
-- ARGV: prefix, lease µs, then pairs of (job id, try_number)
-- Returns one {held, cancel_requested} pair of 0/1 per lease.
local lease_us = tonumber(ARGV[2])
local now = now_us()
local out = {}
for i = 3, #ARGV, 2 do
  local id, try = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', jkey(id), 'status', 'try_number', 'cancel_requested')
  if f[1] == 'processing' and f[2] == try then
    local exp = num(now + lease_us)
    redis.call('HSET', jkey(id), 'lease_expires_at', exp, 'updated', num(now))
    redis.call('ZADD', P .. ':leases', exp, id)
    out[#out + 1] = { 1, f[3] and 1 or 0 }
  else
    out[#out + 1] = { 0, 0 }
  end
end
return out
