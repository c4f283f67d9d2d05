-- prune.lua: delete completed jobs finished before one time and failed/cancelled ones before another.
-- ARGV: prefix, completed_before µs, failed_before µs, limit.  Returns how many jobs were deleted.
local limit = tonumber(ARGV[4])
local n = 0
for _, spec in ipairs({ { 'done:completed', ARGV[2] }, { 'done:failed', ARGV[3] } }) do
  if n < limit then
    local ids = redis.call('ZRANGEBYSCORE', P .. ':' .. spec[1], '-inf', '(' .. spec[2], 'LIMIT', 0, limit - n)
    for _, id in ipairs(ids) do
      local j = load(id)
      if j then erase(j) else redis.call('ZREM', P .. ':' .. spec[1], id) end
      n = n + 1
    end
  end
end
return n
