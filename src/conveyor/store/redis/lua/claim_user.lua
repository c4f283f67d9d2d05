-- claim_user.lua: claim the head of a user's lane if it is due (GS2 Run). Ignores pauses, queue limits, auto_run
-- and served tasks (Run executes the job in the caller, whatever it is).
-- ARGV: prefix, namespace, user_id, worker_id, lease µs, fencing token (32 hex digits)
-- Returns {'conflict'} when a job of the lane is processing, {'none'} when no due head, else {'ok', job JSON}.
local ns, user, worker, lease_us = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local lk, sk = lane_keys(ns, 'u:' .. user)
if redis.call('HGET', sk, 'busy') then return { 'conflict' } end
local head = redis.call('ZRANGE', lk, 0, 0)[1]
if not head then return { 'none' } end
local now = now_us()
local j = load(head)
if tonumber(j.run_at) > now then return { 'none' } end
start(j, worker, now, lease_us, ARGV[6])
return { 'ok', cjson.encode(j) }
