-- put_doc.lua: compare-and-set one field of a hash (namespace documents): set `new` only when the field still
-- holds `expected` ('' = absent), so concurrent replaces cannot lose a revision.
-- ARGV: prefix, key suffix, field, expected (opt), new.  Returns 1 when set, 0 when someone changed it first.
local key = P .. ':' .. ARGV[2]
local cur = redis.call('HGET', key, ARGV[3])
local expected = opt(ARGV[4])
if (cur or nil) ~= expected then return 0 end
redis.call('HSET', key, ARGV[3], ARGV[5])
return 1
