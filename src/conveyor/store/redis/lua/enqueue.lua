-- enqueue.lua: store a batch of new jobs, all or nothing.
-- ARGV: prefix, then 12 values per job: id, namespace, queue, task, payload JSON, priority, run_at µs,
--       max_attempts, created µs, user_id (opt), group_key (opt), unique_key (opt)   [opt = '' or '=' .. value]
-- Returns {'ok', JSON list}: per job 0 when stored, or the active job holding its unique key (a duplicate).
-- Returns {'exists', id} and stores nothing when a job id is already taken.
local N = 12
local count_jobs = (#ARGV - 1) / N
for i = 0, count_jobs - 1 do
  local id = ARGV[2 + i * N]
  if redis.call('EXISTS', jkey(id)) == 1 then return { 'exists', id } end
end

local now = now_us()
local out = {}
local woken = {}
for i = 0, count_jobs - 1 do
  local b = 1 + i * N
  local j = {
    id = ARGV[b + 1], namespace = ARGV[b + 2], queue = ARGV[b + 3], task = ARGV[b + 4], payload = ARGV[b + 5],
    priority = ARGV[b + 6], run_at = ARGV[b + 7], max_attempts = ARGV[b + 8], created = ARGV[b + 9],
    user_id = opt(ARGV[b + 10]), group_key = opt(ARGV[b + 11]), unique_key = opt(ARGV[b + 12]),
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
