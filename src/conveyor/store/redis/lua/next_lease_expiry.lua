-- next_lease_expiry.lua: how long until the earliest lease of a processing job runs out (Store.next_lease_expiry).
-- ARGV: prefix
-- Returns '' when no job is processing, else that expiry minus now in µs (≤ 0: rescue.lua takes it now), by
-- Redis's clock, the one rescue.lua compares leases with. P:leases holds exactly the processing jobs by expiry.
local first = redis.call('ZRANGE', P .. ':leases', 0, 0, 'WITHSCORES')
if not first[2] then return '' end
return num(tonumber(first[2]) - now_us())
