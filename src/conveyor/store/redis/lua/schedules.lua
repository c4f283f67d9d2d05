-- schedules.lua: cron schedules made at runtime (P:cron:defs) and the run records of every schedule
-- (P:cron:runs:<name> ordered by occurrence, P:cron:run:<name> their documents), each change in one step.
-- ARGV: prefix, op, name, then per op:
--   'create' doc          -> 1 when stored, 0 when the name is taken
--   'update' doc          -> 1 when replaced, 0 when there is no such schedule
--   'delete'              -> 1 when deleted (with its runs), 0 when there was none
--   'run' occurrence-µs doc keep -> 1 when this call recorded the occurrence (then only the `keep` newest runs
--                                   stay), 0 when it was recorded already
local op, name = ARGV[2], ARGV[3]
local defs = P .. ':cron:defs'
local order = P .. ':cron:runs:' .. name
local docs = P .. ':cron:run:' .. name
if op == 'create' then
  return redis.call('HSETNX', defs, name, ARGV[4])
elseif op == 'update' then
  if redis.call('HEXISTS', defs, name) == 0 then return 0 end
  redis.call('HSET', defs, name, ARGV[4])
  return 1
elseif op == 'delete' then
  redis.call('DEL', order, docs)
  return redis.call('HDEL', defs, name)
elseif op == 'run' then
  local occurrence = ARGV[4]
  if redis.call('HSETNX', docs, occurrence, ARGV[5]) == 0 then return 0 end
  redis.call('ZADD', order, tonumber(occurrence), occurrence)
  local extra = redis.call('ZCARD', order) - tonumber(ARGV[6])
  if extra > 0 then
    local old = redis.call('ZRANGE', order, 0, extra - 1)
    redis.call('HDEL', docs, unpack(old))
    redis.call('ZREMRANGEBYRANK', order, 0, extra - 1)
  end
  return 1
end
return redis.error_reply('schedules.lua: unknown op ' .. tostring(op))
