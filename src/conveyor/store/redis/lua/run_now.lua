-- run_now.lua: a pending job becomes due now (a job already due keeps its run_at, and so its place in the order).
-- ARGV: prefix, job id.  Returns {'ok', job JSON} | {'missing'} | {'invalid', status}.
local id = ARGV[2]
local j = load(id)
if not j then return { 'missing' } end
if j.status ~= 'pending' then return { 'invalid', j.status } end
local now = now_us()
local indexed = is_indexed(j)
if indexed then qunindex(j) end
put(j, { run_at = num(math.min(tonumber(j.run_at), now)), updated = num(now) })
redis.call('ZADD', qkey(j.namespace, j.queue, 'pend'), j.run_at, id)
if indexed then qindex(j, now) end
wake({ [j.queue] = 1 })
return { 'ok', cjson.encode(j) }
