-- prune.lua: delete completed jobs finished before one time and failed/cancelled ones before another, in one
-- namespace or (namespace '') in every namespace that has queues.
-- ARGV: prefix, completed_before µs, failed_before µs, limit, namespace.  Returns how many jobs were deleted.
local limit = tonumber(ARGV[4])
local namespaces = {}
if ARGV[5] ~= '' then
  namespaces[1] = ARGV[5]
else
  local seen = {}
  for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
    local ns = string.match(pair, '^([^:]+):')
    if ns and not seen[ns] then
      seen[ns] = true
      namespaces[#namespaces + 1] = ns
    end
  end
end
local n = 0
for _, ns in ipairs(namespaces) do
  for _, spec in ipairs({ { 'completed', ARGV[2] }, { 'failed', ARGV[3] } }) do
    if n < limit then
      local key = done_key(ns, spec[1])
      local ids = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. spec[2], 'LIMIT', 0, limit - n)
      for _, id in ipairs(ids) do
        local j = load(id)
        if j then erase(j) else redis.call('ZREM', key, id) end
        n = n + 1
      end
    end
  end
end
return n
