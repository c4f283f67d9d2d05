-- next_due.lua: how long until the earliest run_at among the jobs claim_due could take once they are due.
-- ARGV: prefix, JSON {"queues": [...], "namespaces": [...] or null, "exclude": [...], "tasks": [...] or null}
--       (claim's scope: namespaces with auto_run off and unserved tasks are out of it, as in claim_due)
-- Returns '' when there is none, else that run_at minus now in µs (≤ 0: one is due now), by Redis's clock.
-- Only the claim index is read: a served task's `ready` set (due now) and the first member of its `sched` set
-- (scored by run_at), which hold exactly the claimable jobs (a lane's head, only while the lane is idle).
local in_scope, served = claim_scope(cjson.decode(ARGV[2]))
local now = now_us()
local best = nil
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  if in_scope(pair) and redis.call('SISMEMBER', P .. ':qpaused', pair) == 0 then
    local base = P .. ':q:' .. pair .. ':'
    local open = true
    local cap = redis.call('HGET', P .. ':qconc', pair)
    if cap then open = (counts_of(base, nil).processing or 0) < tonumber(cap) end
    if open then
      -- a rate-limited pair's jobs are claimable no sooner than its next token
      local floor = now
      local kr = key_rates(pair, now, false)
      if not kr then
        local allowed, wait = rate_state(pair, now)
        if allowed then floor = now + wait end
      end
      local key_cap = redis.call('HGET', P .. ':qkey', pair)
      for _, task in ipairs(redis.call('SMEMBERS', base .. 'tasks')) do
        if served(task) then
          local ready
          if key_cap or kr then  -- jobs of keys at their limit or out of rate tokens do not count
            ready = #keyed_ready(base, task, pair, 1, key_cap and tonumber(key_cap), kr) > 0
            if kr then kr.spent = {} end
            if not ready and kr and redis.call('ZCARD', base .. 'ready:' .. task) > 0 then
              -- held by their rate keys: no sooner than the first of the dry keys' next tokens (a bound)
              local dry = redis.call('ZRANGEBYSCORE', kr.zset, '(' .. num(now + kr.tol), '+inf', 'WITHSCORES',
                                     'LIMIT', 0, 1)
              if dry[2] then
                local t = tonumber(dry[2]) - kr.tol
                if best == nil or t < best then best = t end
              end
            end
          else
            ready = redis.call('ZCARD', base .. 'ready:' .. task) > 0
          end
          if ready and (best == nil or floor < best) then best = floor end
          local first = {}
          if key_cap then
            first = keyed_sched(base, task, pair, tonumber(key_cap))
          else
            first = redis.call('ZRANGE', base .. 'sched:' .. task, 0, 0, 'WITHSCORES')
          end
          if first[2] then
            local t = tonumber(first[2])
            if t < floor then t = floor end
            if best == nil or t < best then best = t end
          end
        end
      end
    end
  end
end
if best == nil then return '' end
return num(best - now)
