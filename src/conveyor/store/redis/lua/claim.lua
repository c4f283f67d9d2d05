-- claim.lua: claim up to `limit` due jobs in (priority, run_at, id) order across the chosen queues (claim_due).
-- ARGV: prefix, worker_id, limit, lease µs, JSON {"queues": [...], "namespaces": [...] or null, "exclude": [...],
--       "tasks": [...] or null}, tokens (32 hex digits per job it may claim, from the OS's randomness)
-- Returns a JSON list of the claimed jobs (their hash fields).
local worker, limit, lease_us = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local in_scope, served = claim_scope(cjson.decode(ARGV[5]))
return jobs_json(claim_due(worker, limit, lease_us, in_scope, served, now_us(), ARGV[6]))
