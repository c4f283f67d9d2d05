-- queue_settings.lua: change some of a queue's settings, keep the rest, in one atomic step (update_queue_settings;
-- put_queue_settings passes every field). The limiter's state (P:qtat) is kept.
-- ARGV: prefix, pair, queue, paused, concurrency, rate, key_concurrency, rate_key — each '' to keep the stored
--       value; rate_key '-' (none) or '=' .. the key; paused
--       '0' | '1'; concurrency and key_concurrency '-' (none) or a number; rate '-' (none) or JSON {"limit",
--       "period" (text), "burst" (or null), "interval" (µs), "tolerance" (µs)}
-- Returns the settings document stored (JSON: paused, concurrency, rate).
local pair, queue = ARGV[2], ARGV[3]
local doc = {
  paused = false, concurrency = cjson.null, rate = cjson.null, key_concurrency = cjson.null, rate_key = cjson.null
}
local old = redis.call('HGET', P .. ':qset', pair)
if old then
  local d = cjson.decode(old)
  doc.paused = d.paused
  if d.concurrency ~= nil then doc.concurrency = d.concurrency end
  if d.rate ~= nil then doc.rate = d.rate end
  if d.key_concurrency ~= nil then doc.key_concurrency = d.key_concurrency end
  if d.rate_key ~= nil then doc.rate_key = d.rate_key end
end
if ARGV[8] == '-' then doc.rate_key = cjson.null elseif ARGV[8] ~= '' then doc.rate_key = string.sub(ARGV[8], 2) end
if ARGV[4] ~= '' then doc.paused = ARGV[4] == '1' end
if ARGV[5] == '-' then doc.concurrency = cjson.null elseif ARGV[5] ~= '' then doc.concurrency = tonumber(ARGV[5]) end
if ARGV[7] == '-' then
  doc.key_concurrency = cjson.null
elseif ARGV[7] ~= '' then
  doc.key_concurrency = tonumber(ARGV[7])
end
local rate_view = nil
if ARGV[6] == '-' then
  doc.rate = cjson.null
elseif ARGV[6] ~= '' then
  local r = cjson.decode(ARGV[6])
  doc.rate = { limit = r.limit, period = r.period, burst = r.burst }
  rate_view = r.interval .. '|' .. r.tolerance
end
redis.call('HSET', P .. ':qset', pair, cjson.encode(doc))
redis.call('SADD', P .. ':pairs', pair)
if doc.paused then redis.call('SADD', P .. ':qpaused', pair) else redis.call('SREM', P .. ':qpaused', pair) end
if doc.concurrency == cjson.null then
  redis.call('HDEL', P .. ':qconc', pair)
else
  redis.call('HSET', P .. ':qconc', pair, doc.concurrency)
end
if doc.key_concurrency == cjson.null then
  redis.call('HDEL', P .. ':qkey', pair)
else
  redis.call('HSET', P .. ':qkey', pair, doc.key_concurrency)
end
if doc.rate_key == cjson.null then
  redis.call('HDEL', P .. ':qrkey', pair)
else
  redis.call('HSET', P .. ':qrkey', pair, doc.rate_key)
end
if doc.rate == cjson.null then
  redis.call('HDEL', P .. ':qrate', pair)
elseif rate_view then
  redis.call('HSET', P .. ':qrate', pair, rate_view)
end
-- a resumed queue or a raised limit may free jobs
redis.call('LPUSH', P .. ':wake:' .. queue, '1')
redis.call('LTRIM', P .. ':wake:' .. queue, 0, 63)
return cjson.encode(doc)
