-- has_due.lua (read-only): whether the user's lane has a pending job that is due now.
-- ARGV: prefix, namespace, user_id.  Returns 1 or 0.
local lk = lane_keys(ARGV[2], 'u:' .. ARGV[3])
local now = now_us()
for _, id in ipairs(redis.call('ZRANGE', lk, 0, -1)) do
  if tonumber(redis.call('HGET', jkey(id), 'run_at')) <= now then return 1 end
end
return 0
