-- rate_state.lua: a queue's rate limiter state (Store.rate_state), by Redis's clock.
-- ARGV: prefix, pair, limit (how many keys to list)
-- Returns {now µs, the pair's own tat or false, keys holding state, flat [key, tat, ...] of the latest tats}.
local pair, limit = ARGV[2], tonumber(ARGV[3])
local now = now_us()
local tat = redis.call('HGET', P .. ':qtat', pair)
local rk = P .. ':rtat:' .. pair
local count = redis.call('ZCOUNT', rk, '(' .. num(now), '+inf')
local keys = {}
if limit > 0 then
  local r = redis.call('ZREVRANGEBYSCORE', rk, '+inf', '(' .. num(now), 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #r, 2 do
    keys[#keys + 1] = r[i]
    keys[#keys + 1] = num(tonumber(r[i + 1]))
  end
end
return { num(now), tat or false, count, keys }
