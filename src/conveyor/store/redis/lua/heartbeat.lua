-- heartbeat.lua: extend held leases to now + lease (fenced by the lease token).
-- ARGV: prefix, lease µs, then pairs of (job id, token)
-- Returns two characters per lease: held and cancel_requested, each '1' or '0' (never a cancel for a stale token).
local lease_us = tonumber(ARGV[2])
local now = now_us()
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', jkey(id), 'status', 'lease_token', 'cancel_requested')
  if f[1] == 'processing' and f[2] == token then
    local exp = num(now + lease_us)
    redis.call('HSET', jkey(id), 'lease_expires_at', exp, 'updated', num(now))
    redis.call('ZADD', P .. ':leases', exp, id)
    out[#out + 1] = f[3] and '11' or '10'
  else
    out[#out + 1] = '00'
  end
end
return table.concat(out)
