-- delete_user.lua: delete every job of a user (any namespace, any status) with its attempts (GS2 clean user data).
-- ARGV: prefix, user id.  Returns how many jobs were deleted.
local user = ARGV[2]
local seen, n, now, woken = {}, 0, now_us(), {}
local namespaces = {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local ns = string.match(pair, '^([^:]+):')
  if ns and not seen[ns] then
    seen[ns] = true
    namespaces[#namespaces + 1] = ns
  end
end
for _, ns in ipairs(namespaces) do
  for _, id in ipairs(redis.call('ZRANGE', P .. ':user:' .. ns .. ':' .. user, 0, -1)) do
    local j = load(id)
    if j then
      if j.status == 'pending' then note(woken, pending_leave(j, now)) end
      erase(j)
      if j.skey then
        lane_release(j)
        note(woken, lane_sync(j.namespace, j.skey, now))
      end
      n = n + 1
    end
  end
  redis.call('DEL', P .. ':user:' .. ns .. ':' .. user)
end
wake(woken)
return n
