-- delete_namespace.lua: delete a namespace with every job of it (and their attempts, lanes, unique keys, user and
-- finished-job indexes) and its queue settings, in this one script (GS2's rule). A worker still running one of its
-- jobs has its report refused (the job is gone).
-- ARGV: prefix, namespace.  Returns 1 when the namespace had a record or jobs, else 0.
local ns = ARGV[2]
local found = redis.call('HDEL', P .. ':ns', ns)
redis.call('SREM', P .. ':nsoff', ns)
local lanes, users = {}, {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  if string.match(pair, '^([^:]+):') == ns then
    local base = P .. ':q:' .. pair .. ':'
    for _, status in ipairs({ 'pending', 'processing', 'completed', 'failed', 'cancelled' }) do
      for _, id in ipairs(redis.call('ZRANGE', base .. 's:' .. status, 0, -1)) do
        local f = redis.call('HMGET', jkey(id), 'skey', 'user_id')
        if f[1] then lanes[f[1]] = true end
        if f[2] then users[f[2]] = true end
        if status == 'processing' then redis.call('ZREM', P .. ':leases', id) end
        redis.call('DEL', jkey(id), akey(id))
        found = 1
      end
      redis.call('DEL', base .. 's:' .. status)
    end
    for _, task in ipairs(redis.call('SMEMBERS', base .. 'tasks')) do
      redis.call('DEL', base .. 'ready:' .. task, base .. 'sched:' .. task)
    end
    redis.call('DEL', base .. 'tasks', base .. 'sched', base .. 'pend', base .. 'n')
    redis.call('SREM', P .. ':pairs', pair)
    redis.call('SREM', P .. ':qpaused', pair)
    redis.call('HDEL', P .. ':qconc', pair)
    redis.call('HDEL', P .. ':qset', pair)
    redis.call('HDEL', P .. ':qrate', pair)
    redis.call('HDEL', P .. ':qtat', pair)
    redis.call('HDEL', P .. ':qkey', pair)
    redis.call('HDEL', P .. ':qrkey', pair)
    redis.call('DEL', P .. ':rtat:' .. pair)
    redis.call('DEL', P .. ':kbusy:' .. pair)
  end
end
for skey in pairs(lanes) do redis.call('DEL', lane_keys(ns, skey)) end
for user in pairs(users) do redis.call('DEL', P .. ':user:' .. ns .. ':' .. user) end
redis.call('DEL', P .. ':uniq:' .. ns, P .. ':uniqh:' .. ns, done_key(ns, 'completed'), done_key(ns, 'failed'))
return found
