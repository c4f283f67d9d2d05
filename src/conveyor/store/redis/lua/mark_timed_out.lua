-- mark_timed_out.lua: the try holding a lease passed its timeout while its handler runs on; fenced like heartbeat.
-- ARGV: prefix, job id, try_number
-- Returns 1 when marked, 0 when the lease no longer holds (nothing changed).
local id, try = ARGV[2], ARGV[3]
local f = redis.call('HMGET', jkey(id), 'status', 'try_number')
if f[1] ~= 'processing' or f[2] ~= try then return 0 end
local now = num(now_us())
redis.call('HSET', jkey(id), 'timed_out_at', now, 'updated', now)
return 1
