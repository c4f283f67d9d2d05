-- migrate.lua: bring the key layout to version 2 (run once by Store.migrate; idempotent).
-- * ready and sched sets per (pair, task): every legacy q:<pair>:ready / q:<pair>:sched is split by task into
--   q:<pair>:ready:<task> / q:<pair>:sched:<task>, and q:<pair>:tasks lists every task the pair's counters have seen;
-- * P:nsoff, the namespaces whose auto_run is off, is built from their documents.
-- Attempt records keep their fields (a try number for old records, a lease token for new ones).
-- ARGV: prefix, version.  Returns {1, version} when it migrated, {0, version} when the layout was already at that
-- version, and {-1, found} without changing anything when a newer Conveyor wrote a newer layout.
local found = redis.call('HGET', P .. ':meta', 'schema')
if found == ARGV[2] then return {0, found} end
if found and tonumber(found) and tonumber(found) > tonumber(ARGV[2]) then return {-1, found} end
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local base = P .. ':q:' .. pair .. ':'
  for _, field in ipairs(redis.call('HKEYS', base .. 'n')) do
    local task = string.match(field, '^[^|]+|(.*)$')
    if task then redis.call('SADD', base .. 'tasks', task) end
  end
  local legacy = redis.call('ZRANGE', base .. 'ready', 0, -1, 'WITHSCORES')
  for i = 1, #legacy, 2 do
    local id = string.sub(legacy[i], 18)
    local task = redis.call('HGET', jkey(id), 'task')
    if task then
      redis.call('ZADD', base .. 'ready:' .. task, legacy[i + 1], legacy[i])
      redis.call('SADD', base .. 'tasks', task)
    end
  end
  redis.call('DEL', base .. 'ready')
  local sched = redis.call('ZRANGE', base .. 'sched', 0, -1, 'WITHSCORES')
  for i = 1, #sched, 2 do
    local task = redis.call('HGET', jkey(sched[i]), 'task')
    if task then
      redis.call('ZADD', base .. 'sched:' .. task, sched[i + 1], sched[i])
      redis.call('SADD', base .. 'tasks', task)
    end
  end
  redis.call('DEL', base .. 'sched')
end
local docs = redis.call('HGETALL', P .. ':ns')
for i = 1, #docs, 2 do
  if cjson.decode(docs[i + 1]).auto_run == false then redis.call('SADD', P .. ':nsoff', docs[i]) end
end
redis.call('HSET', P .. ':meta', 'schema', ARGV[2])
return {1, ARGV[2]}
