-- kv_setdefault.lua: put a key-value entry only when no live one exists, and answer the value in place and whether
-- this call put it, in one step (the one idempotency primitive: reserve and read with nothing in between).
-- ARGV: prefix, key, value, expiry in ms ('' = none).  Returns {value in place, 1 when put by this call else 0}.
local k = P .. ':kv:' .. ARGV[2]
local put
if ARGV[4] == '' then
  put = redis.call('SET', k, ARGV[3], 'NX')
else
  put = redis.call('SET', k, ARGV[3], 'NX', 'PX', ARGV[4])
end
if put then return {ARGV[3], 1} end
return {redis.call('GET', k), 0}
