-- enqueue.lua: store a batch of new jobs, all or nothing.
-- ARGV: prefix, JSON list with one list of strings per job: id, namespace, queue, task, payload JSON, priority,
--       run_at µs, max_attempts, created µs, user_id, group_key, unique_key (the last three may be null)
-- Returns {'ok', JSON list}: per job 0 when stored, or the active job holding its unique key (a duplicate).
-- Returns {'exists', id} and stores nothing when a job id is already taken.
local rows = cjson.decode(ARGV[2])
for _, row in ipairs(rows) do
  if redis.call('EXISTS', jkey(row[1])) == 1 then return { 'exists', row[1] } end
end

local now = now_us()
local out = {}
local woken = {}
for _, r in ipairs(rows) do
  local j = {
    id = r[1], namespace = r[2], queue = r[3], task = r[4], payload = r[5], priority = r[6], run_at = r[7],
    max_attempts = r[8], created = r[9], user_id = nul(r[10]), group_key = nul(r[11]), unique_key = nul(r[12]),
  }
  local holder = false
  if j.unique_key then holder = redis.call('HGET', P .. ':uniq:' .. j.namespace, j.unique_key) end
  if holder then
    out[#out + 1] = load(holder)  -- within a batch the first of equal keys already holds it
  else
    if j.group_key then j.skey = 'g:' .. j.group_key elseif j.user_id then j.skey = 'u:' .. j.user_id end
    local fields = {
      'id', j.id, 'namespace', j.namespace, 'queue', j.queue, 'task', j.task, 'payload', j.payload,
      'priority', j.priority, 'run_at', j.run_at, 'attempts', '0', 'max_attempts', j.max_attempts,
      'try_number', '0', 'created', j.created, 'updated', j.created,
    }
    for _, k in ipairs({ 'user_id', 'group_key', 'unique_key', 'skey' }) do
      if j[k] then
        fields[#fields + 1] = k
        fields[#fields + 1] = j[k]
      end
    end
    redis.call('HSET', jkey(j.id), unpack(fields))
    transition(j, 'pending')
    redis.call('SADD', P .. ':pairs', j.namespace .. ':' .. j.queue)
    if j.user_id then redis.call('ZADD', P .. ':user:' .. j.namespace .. ':' .. j.user_id, j.created, j.id) end
    note(woken, pending_enter(j, now))
    out[#out + 1] = 0
  end
end
wake(woken)
return { 'ok', cjson.encode(out) }
