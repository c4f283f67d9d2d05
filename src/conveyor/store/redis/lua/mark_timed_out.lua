-- mark_timed_out.lua: the try holding a lease passed its timeout while its handler runs on; fenced like heartbeat.
-- ARGV: prefix, job id, lease token
-- Returns 1 when marked, 0 when the lease no longer holds (nothing changed).
local id, token = ARGV[2], ARGV[3]
local f = redis.call('HMGET', jkey(id), 'status', 'lease_token')
if f[1] ~= 'processing' or f[2] ~= token then return 0 end
local now = num(now_us())
redis.call('HSET', jkey(id), 'timed_out_at', now, 'updated', now)
return 1
