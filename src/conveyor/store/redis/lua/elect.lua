-- elect.lua: leader election. A role is the hash P:leader:<name> {holder, term} whose key expiry (PEXPIRE, Redis's
-- clock) is the lease: SET NX PX semantics, with the renewal fenced on the holder in the same script. Terms come
-- from P:leaderterms (never expires), so a term is never given twice; P:leadernames lists the roles ever held.
-- ARGV: prefix, op, and for op
--   'elect':  name, candidate, ttl ms → {1 if the candidate holds it, holder, term, ms left}
--   'resign': name, candidate        → {} (the role is dropped at once if the candidate holds it)
--   'list':                          → flat {name, holder, term, ms left, …} of the roles held now
local op = ARGV[2]
local function lkey(name) return P .. ':leader:' .. name end

if op == 'list' then
  local out = {}
  for _, name in ipairs(redis.call('SMEMBERS', P .. ':leadernames')) do
    local cur = redis.call('HMGET', lkey(name), 'holder', 'term')
    if cur[1] then
      out[#out + 1] = name
      out[#out + 1] = cur[1]
      out[#out + 1] = cur[2]
      out[#out + 1] = tostring(redis.call('PTTL', lkey(name)))
    end
  end
  return out
end

local name, cand = ARGV[3], ARGV[4]
local key = lkey(name)
if op == 'resign' then
  if redis.call('HGET', key, 'holder') == cand then redis.call('DEL', key) end
  return {}
end

local ttl = tonumber(ARGV[5])
local cur = redis.call('HMGET', key, 'holder', 'term')
if cur[1] and cur[1] ~= cand then
  return { 0, cur[1], cur[2], tostring(redis.call('PTTL', key)) }
end
local term = cur[2]
if not cur[1] then
  term = tostring(redis.call('HINCRBY', P .. ':leaderterms', name, 1))
  redis.call('HSET', key, 'holder', cand, 'term', term)
  redis.call('SADD', P .. ':leadernames', name)
end
redis.call('PEXPIRE', key, ttl)
return { 1, cand, term, tostring(ttl) }
