-- put_namespace.lua: compare-and-set a namespace's document, and keep P:nsoff (the namespaces whose auto_run is off,
-- which every claim reads) in step with it in the same step: set `new` only when the field still holds `expected`
-- ('' = absent), so concurrent replaces cannot lose a revision.
-- ARGV: prefix, name, expected (opt), new document, auto_run ('1'/'0').  Returns 1 when set, 0 when someone
-- changed it first.
local key = P .. ':ns'
local cur = redis.call('HGET', key, ARGV[2])
local expected = opt(ARGV[3])
if (cur or nil) ~= expected then return 0 end
redis.call('HSET', key, ARGV[2], ARGV[4])
if ARGV[5] == '1' then
  redis.call('SREM', P .. ':nsoff', ARGV[2])
else
  redis.call('SADD', P .. ':nsoff', ARGV[2])
end
return 1
