-- enqueue.lua: store a batch of new jobs, all or nothing.
-- ARGV: prefix, JSON list with one list of strings per job: id, namespace, queue, task, payload JSON, priority,
--       run_at µs, max_attempts, created µs, user_id, group_key, unique_key, concurrency_key (the last four may
--       be null), unique_hash, unique_states, unique_replace (`unique=`: null, null, 0 without it)
--       and the hand-off: '' or JSON {"worker", "limit", "lease" (µs), "queues", "namespaces", "exclude", "tasks",
--       "tokens"}, an idle worker of the enqueuing process to claim for in this same step (claim_due, the rules of
--       claim.lua: served tasks, auto_run, lanes, pauses, caps)
-- Returns {'ok', JSON list, JSON claimed, woke}: per job 0 when stored, or the active job holding its unique key (a
-- duplicate); the jobs claimed for the idle worker; 1 when wake tokens went out (claimable jobs remain), else 0.
-- Returns {'exists', id} and stores nothing when a job id is already taken.
local rows = cjson.decode(ARGV[2])
for _, row in ipairs(rows) do
  if redis.call('EXISTS', jkey(row[1])) == 1 then return { 'exists', row[1] } end
end

local now = now_us()
local out = {}
local woken = {}
local woken_pairs = {}
local later = {}  -- queues that got jobs for later: idle workers re-read next_due (hand-off or not)
local registered = {}
for _, r in ipairs(rows) do
  local j = {
    id = r[1], namespace = r[2], queue = r[3], task = r[4], payload = r[5], priority = r[6], run_at = r[7],
    max_attempts = r[8], created = r[9], user_id = nul(r[10]), group_key = nul(r[11]), unique_key = nul(r[12]),
    concurrency_key = nul(r[13]),
  }
  local holder = false
  if j.unique_key then holder = redis.call('HGET', P .. ':uniq:' .. j.namespace, j.unique_key) end
  local uhash = nul(r[14])
  if uhash then
    j.unique_hash, j.unique_states = uhash, r[15]
    holder = redis.call('HGET', P .. ':uniqh:' .. j.namespace, uhash)
  end
  if holder then
    local h = load(holder)  -- within a batch the first of equal keys already holds it
    local rep = tonumber(r[16] or 0)
    if uhash and rep > 0 and h.status == 'pending' then  -- unique.replace: 1 payload, 2 run_at
      local ch = { updated = num(now) }
      if rep % 2 == 1 then ch.payload = j.payload end
      if rep >= 2 then ch.run_at = j.run_at end
      local indexed = ch.run_at and is_indexed(h)
      if indexed then qunindex(h) end
      put(h, ch)
      if ch.run_at then
        redis.call('ZADD', qkey(h.namespace, h.queue, 'pend'), h.run_at, h.id)
        if indexed then
          local q = qindex(h, now)
          if q then note(woken, q) elseif tonumber(h.run_at) > now then note(later, h.queue) end
        end
      end
    end
    out[#out + 1] = h
  else
    if j.group_key then j.skey = 'g:' .. j.group_key elseif j.user_id then j.skey = 'u:' .. j.user_id end
    local fields = {
      'id', j.id, 'namespace', j.namespace, 'queue', j.queue, 'task', j.task, 'payload', j.payload,
      'priority', j.priority, 'run_at', j.run_at, 'attempts', '0', 'max_attempts', j.max_attempts,
      'try_number', '0', 'created', j.created, 'updated', j.created,
    }
    for _, k in ipairs({ 'user_id', 'group_key', 'unique_key', 'skey', 'concurrency_key', 'unique_hash',
                         'unique_states' }) do
      if j[k] then
        fields[#fields + 1] = k
        fields[#fields + 1] = j[k]
      end
    end
    redis.call('HSET', jkey(j.id), unpack(fields))
    transition(j, 'pending')
    local pair = j.namespace .. ':' .. j.queue
    redis.call('SADD', P .. ':pairs', pair)
    if not registered[pair .. '\n' .. j.task] then  -- the pair's tasks: the ready sets a claim looks at
      registered[pair .. '\n' .. j.task] = true
      redis.call('SADD', P .. ':q:' .. pair .. ':tasks', j.task)
    end
    if j.user_id then redis.call('ZADD', P .. ':user:' .. j.namespace .. ':' .. j.user_id, j.created, j.id) end
    local q = pending_enter(j, now)
    if q then
      note(woken, q)
      woken_pairs[j.namespace .. ':' .. q .. '\n' .. j.task] = j.task
    elseif tonumber(j.run_at) > now then
      note(later, j.queue)
    end
    out[#out + 1] = 0
  end
end
local claimed = {}
if ARGV[3] ~= '' and next(woken) ~= nil then
  local h = cjson.decode(ARGV[3])
  local in_scope, served = claim_scope(h)
  claimed = claim_due(h.worker, tonumber(h.limit), tonumber(h.lease), in_scope, served, now, h.tokens)
  -- Nothing left to wake anyone for when the idle worker took less than it could and serves every (queue, task)
  -- that got new work: what it did not take, no worker could (lanes, pauses, caps, auto_run).
  if #claimed < tonumber(h.limit) then
    local covered = true
    for key, task in pairs(woken_pairs) do
      local pair = string.match(key, '^(.-)\n')
      if not in_scope(pair) or not served(task) then covered = false end
    end
    if covered then woken = {} end
  end
end
for queue, n in pairs(later) do woken[queue] = (woken[queue] or 0) + n end
wake(woken)
local woke = 0
if next(woken) ~= nil then woke = 1 end
return { 'ok', cjson.encode(out), jobs_json(claimed), woke }
