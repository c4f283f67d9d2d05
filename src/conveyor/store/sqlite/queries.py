"""Every SQL statement of the SQLite store, readable as SQL.

Parameters are positional (`?`) in the hot paths (cheaper to bind) and named elsewhere. Lists (of ids, of jobs to
insert, of finishes) are bound as one JSON array and read with `json_each`, and job rows come back as JSON arrays
(`JOB_JSON`, aggregated with `json_group_array` where there are many), so each statement has one fixed text and
runs in one or two sqlite3 steps whatever the batch size. That matters more than it looks: Python's sqlite3
releases the GIL around every step, and each hand-back costs the writer thread a wait on a busy event loop
(up to the interpreter's switch interval). A claim of ten jobs is three steps, not fifteen.

The only statements assembled at run time are the claim's per-queue arms (`claim_sql`) and the optional filters
of listings (`where_clause`); both are built from the fragments below.
"""

from __future__ import annotations

from collections.abc import Sequence

# One job as a JSON array, in this order (payload and result embedded as JSON values, times as integer µs).
JOB_JSON = """json_array(id, namespace, queue, task, json(payload), status, priority, run_at, attempts, max_attempts,
    try_number, created, updated, user_id, group_key, unique_key, started_at, finished_at, lease_expires_at,
    worker_id, last_error, json(result), cancel_requested, timed_out_at)"""

# ---- enqueue ------------------------------------------------------------------------------------------------------

# ?1: JSON array of [id, namespace, queue, task, payload_json, priority, run_at, max_attempts, created, user_id,
# group_key, unique_key].
INSERT_JOBS = """
INSERT INTO conveyor_jobs (id, namespace, queue, task, payload, status, priority, run_at, attempts, max_attempts,
                           try_number, created, updated, user_id, group_key, unique_key)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), 'pending', json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), 0, json_extract(value, '$[7]'), 0, json_extract(value, '$[8]'),
       json_extract(value, '$[8]'), json_extract(value, '$[9]'), json_extract(value, '$[10]'),
       json_extract(value, '$[11]')
FROM json_each(?1)
"""

SELECT_ACTIVE_BY_UNIQUE_KEY = f"""
SELECT {JOB_JSON} FROM conveyor_jobs
WHERE namespace = ? AND unique_key = ? AND status IN ('pending', 'processing')
LIMIT 1
"""

REGISTER_QUEUE = "INSERT OR IGNORE INTO conveyor_queues (namespace, name) VALUES (?, ?)"

# ---- claim --------------------------------------------------------------------------------------------------------

SELECT_CLAIM_QUEUES = """
SELECT json_group_array(json_array(namespace, name, paused, concurrency)) FROM conveyor_queues
WHERE name IN (SELECT value FROM json_each(?))
"""

COUNT_PROCESSING_IN_QUEUE = """
SELECT COUNT(*) FROM conveyor_jobs WHERE namespace = ? AND queue = ? AND status = 'processing'
"""

# One arm per (namespace, queue): its due, eligible pending jobs in claim order, at most `limit` of them. The
# partial index conveyor_jobs_claim serves it as one ordered range scan (no sort).
CLAIM_ARM = """SELECT * FROM (
    SELECT rowid AS rid, priority, run_at, id FROM conveyor_jobs
    WHERE namespace = ? AND queue = ? AND status = 'pending' AND eligible = 1 AND run_at <= ?
    ORDER BY priority, run_at, id
    LIMIT ?
)"""

# The claim's candidates: the first `limit` jobs over every arm, in claim order, as two JSON arrays (their rowids
# and the jobs as they are now) in one step. Parameters: four per arm (namespace, queue, now, arm limit), then the
# overall limit.
CLAIM_CANDIDATES = f"""
SELECT json_group_array(c.rid), json_group_array({JOB_JSON})
FROM (
    SELECT rid FROM ({{arms}})
    ORDER BY priority, run_at, id
    LIMIT ?{{limit_param}}
) AS c
JOIN conveyor_jobs ON conveyor_jobs.rowid = c.rid
"""


def claim_sql(arms: int) -> str:
    """The candidate query over `arms` queues (four parameters per arm, then the limit)."""
    parts = []
    for i in range(arms):
        base = 1 + 4 * i
        parts.append(
            CLAIM_ARM.replace("namespace = ?", f"namespace = ?{base}", 1)
            .replace("queue = ?", f"queue = ?{base + 1}", 1)
            .replace("run_at <= ?", f"run_at <= ?{base + 2}", 1)
            .replace("LIMIT ?", f"LIMIT ?{base + 3}", 1)
        )
    return CLAIM_CANDIDATES.format(arms="\n    UNION ALL\n    ".join(parts), limit_param=1 + 4 * arms)


# Start the candidates (same transaction, so still pending). ?4: JSON array of rowids. The store applies the same
# changes to the candidates it read instead of reading them again.
CLAIM = """
UPDATE conveyor_jobs
SET status = 'processing', attempts = attempts + 1, try_number = try_number + 1, started_at = ?1, updated = ?1,
    worker_id = ?2, lease_expires_at = ?3, cancel_requested = 0
WHERE rowid IN (SELECT value FROM json_each(?4)) AND +status = 'pending'
"""

SELECT_JOBS_BY_ROWID = f"""
SELECT json_group_array({JOB_JSON}) FROM conveyor_jobs WHERE rowid IN (SELECT value FROM json_each(?))
"""

SELECT_LANE_PROCESSING = """
SELECT 1 FROM conveyor_jobs WHERE namespace = ? AND serial_key = ? AND status = 'processing' LIMIT 1
"""

CLAIM_LANE_HEAD = f"""
UPDATE conveyor_jobs
SET status = 'processing', attempts = attempts + 1, try_number = try_number + 1, started_at = ?1, updated = ?1,
    worker_id = ?2, lease_expires_at = ?3, cancel_requested = 0
WHERE rowid = (
    SELECT rowid FROM conveyor_jobs
    WHERE namespace = ?4 AND serial_key = ?5 AND serial_key IS NOT NULL AND eligible = 1 AND status = 'pending'
      AND run_at <= ?1
)
RETURNING {JOB_JSON}
"""

# Which of the leases (?1: JSON array of [id, try_number]) still hold, with their cancel flags.
HELD_LEASES = """
SELECT json_group_array(json_array(j.id, j.try_number, j.cancel_requested))
FROM json_each(?1) AS f
JOIN conveyor_jobs AS j
  ON j.id = json_extract(f.value, '$[0]') AND j.try_number = json_extract(f.value, '$[1]') AND +j.status = 'processing'
"""

# Extend the held leases found by HELD_LEASES (?3: JSON array of ids).
HEARTBEAT = """
UPDATE conveyor_jobs SET lease_expires_at = ?1, updated = ?2
WHERE id IN (SELECT value FROM json_each(?3)) AND +status = 'processing'
"""

# A try passed its timeout while its thread runs on (Store.mark_timed_out). Parameters: now, id, try_number.
MARK_TIMED_OUT = """
UPDATE conveyor_jobs SET timed_out_at = ?1, updated = ?1
WHERE id = ?2 AND status = 'processing' AND try_number = ?3
"""

# ---- the next due time --------------------------------------------------------------------------------------------

# The earliest run_at among one (namespace, queue)'s claimable pending jobs (eligible: lane heads of idle lanes),
# due or not. The claim index is ordered by priority first, so a plain MIN(run_at) would read every pending job of
# the queue; instead a recursive walk visits each distinct priority with one index seek (a "loose index scan") and
# takes that priority's first run_at with another: a few seeks, however long the backlog. Parameters: namespace,
# queue.
NEXT_DUE_IN_QUEUE = """
WITH RECURSIVE prio(p) AS (
    SELECT MIN(priority) FROM conveyor_jobs
    WHERE namespace = ?1 AND queue = ?2 AND status = 'pending' AND eligible = 1
    UNION ALL
    SELECT (SELECT MIN(priority) FROM conveyor_jobs
            WHERE namespace = ?1 AND queue = ?2 AND status = 'pending' AND eligible = 1 AND priority > prio.p)
    FROM prio WHERE prio.p IS NOT NULL
)
SELECT MIN((SELECT MIN(run_at) FROM conveyor_jobs
            WHERE namespace = ?1 AND queue = ?2 AND status = 'pending' AND eligible = 1 AND priority = prio.p))
FROM prio WHERE prio.p IS NOT NULL
"""

# ---- finish -------------------------------------------------------------------------------------------------------

# Many finishes in one statement: ?2 is a JSON array of [id, try_number, status, last_error, result_json, run_at]
# (run_at only for retries), ?1 is now. Only entries that HELD_LEASES found live are passed. The unary `+` keeps
# the planner from walking the status index: it must look each id up by primary key.
FINISH_MANY = """
UPDATE conveyor_jobs
SET status = json_extract(f.value, '$[2]'),
    updated = ?1,
    finished_at = CASE WHEN json_extract(f.value, '$[2]') IN ('completed', 'failed', 'cancelled') THEN ?1 END,
    lease_expires_at = NULL,
    worker_id = NULL,
    last_error = json_extract(f.value, '$[3]'),
    result = CASE WHEN json_extract(f.value, '$[2]') = 'completed' THEN json_extract(f.value, '$[4]') ELSE result END,
    run_at = COALESCE(json_extract(f.value, '$[5]'), run_at),
    cancel_requested = CASE WHEN json_extract(f.value, '$[2]') = 'pending' THEN 0 ELSE cancel_requested END
FROM json_each(?2) AS f
WHERE conveyor_jobs.id = json_extract(f.value, '$[0]')
  AND +conveyor_jobs.status = 'processing'
  AND conveyor_jobs.try_number = json_extract(f.value, '$[1]')
"""

# A graceful-shutdown hand-back: the try is not counted. Parameters: updated, run_at, error, id, try_number.
RELEASE = """
UPDATE conveyor_jobs
SET status = 'pending', updated = ?, finished_at = NULL, lease_expires_at = NULL, worker_id = NULL,
    attempts = MAX(0, attempts - 1), try_number = MAX(0, try_number - 1),
    run_at = COALESCE(?, run_at), last_error = COALESCE(?, last_error)
WHERE id = ? AND status = 'processing' AND try_number = ?
"""

# ?1: JSON array of [job_id, try_number, outcome, status_code, started_at, finished_at, worker_id, result_json,
# error, traceback].
INSERT_ATTEMPTS = """
INSERT OR REPLACE INTO conveyor_attempts (job_id, try_number, outcome, status_code, started_at, finished_at,
                                          worker_id, result, error, traceback)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
       json_extract(value, '$[9]')
FROM json_each(?1)
"""

# ---- maintenance --------------------------------------------------------------------------------------------------

SELECT_EXPIRED = """
SELECT id, try_number, worker_id, started_at FROM conveyor_jobs INDEXED BY conveyor_jobs_processing
WHERE status = 'processing' AND lease_expires_at <= ?
ORDER BY lease_expires_at, id
LIMIT ?
"""

RESCUE = f"""
UPDATE conveyor_jobs
SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN attempts < max_attempts THEN ?1 ELSE run_at END,
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END,
    lease_expires_at = NULL, worker_id = NULL, last_error = ?2, updated = ?1
WHERE id = ?3 AND status = 'processing' AND try_number = ?4
RETURNING {JOB_JSON}
"""

# One status at a time, without ORDER BY: a plain range of conveyor_jobs_finished, never a sort of the whole
# backlog inside a write transaction. Parameters: status, finished before, limit.
SELECT_PRUNABLE = """
SELECT id FROM conveyor_jobs INDEXED BY conveyor_jobs_finished
WHERE status = ?1 AND finished_at < ?2 AND finished_at IS NOT NULL AND (?4 IS NULL OR namespace = ?4)
LIMIT ?3
"""

DELETE_ATTEMPTS_OF = "DELETE FROM conveyor_attempts WHERE job_id IN (SELECT value FROM json_each(?))"
DELETE_JOBS = "DELETE FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(?))"

# ---- inspection and management ------------------------------------------------------------------------------------

# Reads for callers (not the claim path) also return the payload's stored text as a second column (Job.payload_json).
SELECT_JOB = f"SELECT {JOB_JSON}, payload FROM conveyor_jobs WHERE id = ?"

LIST_JOBS = f"""
SELECT {JOB_JSON}, payload FROM conveyor_jobs
{{where}}
ORDER BY created DESC, id DESC
LIMIT :limit OFFSET :offset
"""

COUNT_JOBS = "SELECT COUNT(*) FROM conveyor_jobs {where}"

# Optional listing / stats filters, joined with AND by where_clause().
FILTERS = {
    "namespace": "namespace = :namespace",
    "queue": "queue = :queue",
    "task": "task = :task",
    "status": "status = :status",
    "user_id": "user_id = :user_id",
    "ids": "id IN (SELECT value FROM json_each(:ids))",
    "scheduled": "status = 'pending' AND run_at > :now",
}


def where_clause(names: Sequence[str]) -> str:
    """`WHERE a AND b` from the FILTERS fragments named (empty when none)."""
    return ("WHERE " + " AND ".join(FILTERS[n] for n in names)) if names else ""


# Counts come from the status index alone; "scheduled" is counted among pending jobs only (a second query), so a
# long history of finished jobs is never read row by row.
STATS = """
SELECT status, COUNT(*) FROM conveyor_jobs
{where}
GROUP BY status
"""

COUNT_SCHEDULED = "SELECT COUNT(*) FROM conveyor_jobs {where}"

SELECT_ATTEMPTS = """
SELECT job_id, try_number, outcome, status_code, started_at, finished_at, worker_id, result, error, traceback
FROM conveyor_attempts WHERE job_id = ? ORDER BY try_number
"""

CANCEL_PENDING = f"""
UPDATE conveyor_jobs SET status = 'cancelled', finished_at = ?1, updated = ?1
WHERE id = ?2 AND status = 'pending'
RETURNING {JOB_JSON}
"""

REQUEST_CANCEL = f"""
UPDATE conveyor_jobs SET cancel_requested = 1, updated = ?1
WHERE id = ?2 AND status = 'processing'
RETURNING {JOB_JSON}
"""

SELECT_OTHER_ACTIVE_WITH_KEY = """
SELECT id FROM conveyor_jobs
WHERE namespace = ? AND unique_key = ? AND status IN ('pending', 'processing') AND id <> ?
LIMIT 1
"""

REQUEUE = f"""
UPDATE conveyor_jobs
SET status = 'pending', attempts = 0, run_at = ?1, last_error = NULL, finished_at = NULL, cancel_requested = 0,
    updated = ?1
WHERE id = ?2 AND status IN ('failed', 'cancelled')
RETURNING {JOB_JSON}
"""

DELETE_JOB = "DELETE FROM conveyor_jobs WHERE id = ?"
DELETE_ATTEMPTS_OF_USER = (
    "DELETE FROM conveyor_attempts WHERE job_id IN (SELECT id FROM conveyor_jobs WHERE user_id = ?)"
)
DELETE_JOBS_OF_USER = "DELETE FROM conveyor_jobs WHERE user_id = ?"
DELETE_ATTEMPTS_OF_JOB = "DELETE FROM conveyor_attempts WHERE job_id = ?"

RUN_NOW = f"""
UPDATE conveyor_jobs SET run_at = ?1, updated = ?1
WHERE id = ?2 AND status = 'pending'
RETURNING {JOB_JSON}
"""

HAS_PENDING_JOB = """
SELECT EXISTS (
    SELECT 1 FROM conveyor_jobs
    WHERE namespace = ? AND serial_key = ? AND serial_key IS NOT NULL AND status = 'pending'
)
"""

# ---- namespaces ---------------------------------------------------------------------------------------------------

SELECT_NAMESPACE = "SELECT doc FROM conveyor_namespaces WHERE name = ?"
LIST_NAMESPACES = "SELECT doc FROM conveyor_namespaces ORDER BY name"
UPSERT_NAMESPACE = """
INSERT INTO conveyor_namespaces (name, doc) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET doc = excluded.doc
"""
INSERT_NAMESPACE_IF_ABSENT = "INSERT OR IGNORE INTO conveyor_namespaces (name, doc) VALUES (?, ?)"
DELETE_NAMESPACE = "DELETE FROM conveyor_namespaces WHERE name = ?"

# ---- queues -------------------------------------------------------------------------------------------------------

UPSERT_QUEUE_SETTINGS = """
INSERT INTO conveyor_queues (namespace, name, paused, concurrency, configured) VALUES (?, ?, ?, ?, 1)
ON CONFLICT (namespace, name) DO UPDATE
SET paused = excluded.paused, concurrency = excluded.concurrency, configured = 1
"""

QUEUE_COUNTS = """
SELECT namespace, queue, status, COUNT(*) FROM conveyor_jobs
{where}
GROUP BY namespace, queue, status
"""

QUEUE_SCHEDULED = """
SELECT namespace, queue, COUNT(*) FROM conveyor_jobs
{where}
GROUP BY namespace, queue
"""

SELECT_QUEUE_SETTINGS = """
SELECT namespace, name, paused, concurrency, configured FROM conveyor_queues
{where}
"""

# ---- workers ------------------------------------------------------------------------------------------------------

UPSERT_WORKER = """
INSERT INTO conveyor_workers (id, doc, started_at, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, started_at = excluded.started_at, expires_at = excluded.expires_at
"""
DELETE_EXPIRED_WORKERS = "DELETE FROM conveyor_workers WHERE expires_at <= ?"
DELETE_WORKER = "DELETE FROM conveyor_workers WHERE id = ?"
LIST_WORKERS = "SELECT doc FROM conveyor_workers WHERE expires_at > ? ORDER BY started_at, id"

# ---- leader election ----------------------------------------------------------------------------------------------

# Take or renew a role: vacant, lapsed or ours → ours until ?3 (the term grows unless it is a renewal of a live
# lease); held by someone else → unchanged. Parameters: name, candidate, expires_at, now. The caller reads the row
# back in the same transaction.
ELECT = """
INSERT INTO conveyor_leaders (name, holder, term, expires_at) VALUES (?1, ?2, 1, ?3)
ON CONFLICT (name) DO UPDATE
SET term = CASE WHEN conveyor_leaders.holder = excluded.holder AND conveyor_leaders.expires_at > ?4
                THEN conveyor_leaders.term ELSE conveyor_leaders.term + 1 END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE conveyor_leaders.holder = excluded.holder OR conveyor_leaders.expires_at <= ?4
"""
SELECT_LEADER = "SELECT holder, term, expires_at FROM conveyor_leaders WHERE name = ?"
# A resignation lapses the lease (the row stays, so the next term is still counted from it).
RESIGN = "UPDATE conveyor_leaders SET expires_at = ?3 WHERE name = ?1 AND holder = ?2 AND expires_at > ?3"
LIST_LEADERS = "SELECT name, holder, term, expires_at FROM conveyor_leaders WHERE expires_at > ? ORDER BY name"

# ---- key-value ----------------------------------------------------------------------------------------------------

KV_GET = "SELECT value FROM conveyor_kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
KV_SET = """
INSERT INTO conveyor_kv (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# Test-and-set: replaces only an expired value. Parameters: key, value, expires_at, now.
KV_SET_IF_ABSENT = """
INSERT INTO conveyor_kv (key, value, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE conveyor_kv.expires_at IS NOT NULL AND conveyor_kv.expires_at <= ?4
"""
KV_DELETE = "DELETE FROM conveyor_kv WHERE key = ?"

# ---- enqueue_on_connection checks ---------------------------------------------------------------------------------

DATABASE_LIST = "PRAGMA database_list"
