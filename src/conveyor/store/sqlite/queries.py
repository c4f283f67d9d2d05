"""Every SQL statement of the SQLite store, readable as SQL.

Parameters are positional (`?`) in the hot paths (cheaper to bind) and named elsewhere. Lists (of ids, of jobs to
insert, of finishes) are bound as one JSON array and read with `json_each`, and job rows come back as JSON arrays
(`JOB_JSON`, aggregated with `json_group_array` where there are many), so each statement has one fixed text and
runs in one or two sqlite3 steps whatever the batch size. That matters more than it looks: Python's sqlite3
releases the GIL around every step, and each hand-back costs the writer thread a wait on a busy event loop
(up to the interpreter's switch interval). A claim of ten jobs is three steps, not fifteen.

The only statements assembled at run time are the optional filters of listings (`where_clause`). The claim has one
fixed text whatever the number of (namespace, queue, task) ranges it reads: they arrive as a JSON array
(`CLAIM_CANDIDATES`).
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, column_names

# One job as a JSON array: json_array(id, namespace, queue, task, json(payload), status, …), every stored field of
# conveyor.codec.JOB_FIELDS in its order (columns are named after the fields), payload and result embedded as JSON
# values, times as integer µs. The store's decoder (store.py `_job`) is generated from the same list.
JOB_JSON = "json_array(" + ", ".join(f"json({f.name})" if f.kind == "json" else f.name for f in STORED_JOB_FIELDS) + ")"
ATTEMPT_COLUMNS = ", ".join(column_names(STORED_ATTEMPT_FIELDS))

# ---- enqueue ------------------------------------------------------------------------------------------------------

# ?1: JSON array of [id, namespace, queue, task, payload_json, priority, run_at, max_attempts, created, user_id,
# group_key, unique_key, concurrency_key, unique_hash, unique_states] (the last two: null, or both set).
INSERT_JOBS = """
INSERT INTO conveyor_jobs (id, namespace, queue, task, payload, status, priority, run_at, attempts, max_attempts,
                           try_number, created, updated, user_id, group_key, unique_key, concurrency_key,
                           unique_hash, unique_states)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), 'pending', json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), 0, json_extract(value, '$[7]'), 0, json_extract(value, '$[8]'),
       json_extract(value, '$[8]'), json_extract(value, '$[9]'), json_extract(value, '$[10]'),
       json_extract(value, '$[11]'), json_extract(value, '$[12]'), json_extract(value, '$[13]'),
       json_extract(value, '$[14]')
FROM json_each(?1)
"""

# Unique jobs (`unique=`): the job holding a hash is one with that hash whose status is among its own states (bits
# of model.UNIQUE_STATE_BITS). Read inside the enqueue's write transaction, so nothing slips in between.
UNIQUE_STATE_BIT = (
    "CASE status WHEN 'pending' THEN 1 WHEN 'processing' THEN 2 WHEN 'completed' THEN 4 WHEN 'failed' THEN 8 "
    "ELSE 16 END"
)
SELECT_UNIQUE_HOLDER = f"""
SELECT {JOB_JSON} FROM conveyor_jobs
WHERE namespace = ? AND unique_hash = ? AND (unique_states & {UNIQUE_STATE_BIT}) <> 0
LIMIT 1
"""
# A duplicate's `unique.replace` on a pending holder: ?2 payload (JSON text) or null to keep it, ?3 run_at µs or
# null to keep it, ?4 now µs.
REPLACE_PENDING = f"""
UPDATE conveyor_jobs
SET payload = coalesce(?2, payload), run_at = coalesce(?3, run_at), updated = ?4
WHERE id = ?1 AND status = 'pending'
RETURNING {JOB_JSON}
"""

SELECT_ACTIVE_BY_UNIQUE_KEY = f"""
SELECT {JOB_JSON} FROM conveyor_jobs
WHERE namespace = ? AND unique_key = ? AND status IN ('pending', 'processing')
LIMIT 1
"""

REGISTER_QUEUE = "INSERT OR IGNORE INTO conveyor_queues (namespace, name) VALUES (?, ?)"
# Parameters: queue, task, namespace.
REGISTER_QUEUE_TASK = "INSERT OR IGNORE INTO conveyor_queue_tasks (queue, task, namespace) VALUES (?, ?, ?)"

# A job's key: the bucket the claim charges (model.rate_key_value). ?K: the queue's rate_key; ?P: '$.<field>' for
# a payload field (else NULL). A payload field counts when it is text or an integer below 10^15.
RATE_KEY_OF = """coalesce(CASE {k} WHEN 'user_id' THEN {t}user_id WHEN 'group_key' THEN {t}group_key
         WHEN 'concurrency_key' THEN {t}concurrency_key
         ELSE CASE json_type({t}payload, {p})
              WHEN 'text' THEN json_extract({t}payload, {p})
              WHEN 'integer' THEN CASE WHEN abs(json_extract({t}payload, {p})) < 9007199254740992
                                       THEN CAST(json_extract({t}payload, {p}) AS TEXT) END END END, '')"""

# ---- claim --------------------------------------------------------------------------------------------------------

# The claim's plan: every (namespace, queue, task) range it may read, with its queue's cap and rate limit (limit,
# period, burst, and the limiter's theoretical arrival time), in one step. ?1: JSON
# array of queues; ?2: JSON array of served tasks, or NULL for any task. Paused queues and namespaces whose stored
# settings have auto_run off are left out here, inside the claim's own write transaction (so a setting committed
# before a job was enqueued always governs that job's claim).
SELECT_CLAIM_ARMS = """
SELECT json_group_array(json_array(t.namespace, t.queue, t.task, q.concurrency, q.rate_limit, q.rate_period,
                                    q.rate_burst, q.rate_tat, q.key_concurrency, q.rate_key))
FROM conveyor_queue_tasks AS t
JOIN conveyor_queues AS q ON q.namespace = t.namespace AND q.name = t.queue
WHERE t.queue IN (SELECT value FROM json_each(?1))
  AND (?2 IS NULL OR t.task IN (SELECT value FROM json_each(?2)))
  AND NOT q.paused
  AND NOT EXISTS (
      SELECT 1 FROM conveyor_namespaces AS n
      WHERE n.name = t.namespace AND json_extract(n.doc, '$.auto_run') = 0
  )
"""

# A queue with a limit per concurrency key: its processing jobs per key. Parameters: namespace, queue.
COUNT_PROCESSING_PER_KEY = """
SELECT concurrency_key, COUNT(*) FROM conveyor_jobs
WHERE namespace = ? AND queue = ? AND status = 'processing' AND concurrency_key IS NOT NULL
GROUP BY concurrency_key
"""

COUNT_PROCESSING_IN_QUEUE = """
SELECT COUNT(*) FROM conveyor_jobs WHERE namespace = ? AND queue = ? AND status = 'processing'
"""

# The claim's candidates: for each range of ?1 (a JSON array of [namespace, queue, task]), its first ?3 due, eligible
# pending jobs in claim order — one ordered range of the partial index conveyor_jobs_claim each, via the correlated
# IN list —, then the first ?4 of them all in claim order, as two JSON arrays (rowids, and the jobs as they are now)
# in one step. ?2 is now.
CLAIM_CANDIDATES = f"""
SELECT json_group_array(c.rid), json_group_array({JOB_JSON})
FROM (
    SELECT x.rowid AS rid
    FROM json_each(?1) AS a, conveyor_jobs AS x
    WHERE x.rowid IN (
        SELECT y.rowid FROM conveyor_jobs AS y
        WHERE y.namespace = json_extract(a.value, '$[0]') AND y.queue = json_extract(a.value, '$[1]')
          AND y.task = json_extract(a.value, '$[2]') AND y.status = 'pending' AND y.eligible = 1 AND y.run_at <= ?2
        ORDER BY y.priority, y.run_at, y.id
        LIMIT ?3
    )
    ORDER BY x.priority, x.run_at, x.id
    LIMIT ?4
) AS c
JOIN conveyor_jobs ON conveyor_jobs.rowid = c.rid
"""

# CLAIM_CANDIDATES for the ranges of one queue with a limit per concurrency key: ?5 is a JSON array of the keys at
# their limit, whose jobs the range scan passes over (so a blocked key's backlog never hides the jobs behind it).
# With a rate_key also (?6 the rate key, ?7 its payload path or NULL, ?8 a JSON array of the keys out of tokens),
# it passes over the jobs of keys out of tokens as well.
CLAIM_CANDIDATES_KEYED = CLAIM_CANDIDATES.replace(
    "AND y.eligible = 1 AND y.run_at <= ?2",
    "AND y.eligible = 1 AND y.run_at <= ?2\n"
    "          AND (y.concurrency_key IS NULL OR y.concurrency_key NOT IN (SELECT value FROM json_each(?5)))\n"
    "          AND (?6 IS NULL OR "
    + RATE_KEY_OF.format(k="?6", p="?7", t="y.")
    + " NOT IN (SELECT value FROM json_each(?8)))",
)
assert CLAIM_CANDIDATES_KEYED != CLAIM_CANDIDATES

# Start the candidates (same transaction, so still pending), each under its own fresh fencing token. ?4: JSON array
# of [rowid, token]. The store applies the same changes to the candidates it read instead of reading them again.
CLAIM = """
UPDATE conveyor_jobs
SET status = 'processing', attempts = attempts + 1, try_number = try_number + 1, started_at = ?1, updated = ?1,
    worker_id = ?2, lease_expires_at = ?3, cancel_requested = 0, lease_token = json_extract(c.value, '$[1]')
FROM json_each(?4) AS c
WHERE conveyor_jobs.rowid = json_extract(c.value, '$[0]') AND +conveyor_jobs.status = 'pending'
"""

# A rate-limited queue's limiter after a claim started jobs from it (same transaction). Parameters: tat, namespace,
# queue.
ADVANCE_RATE = "UPDATE conveyor_queues SET rate_tat = ? WHERE namespace = ? AND name = ?"

# ---- rate limits per key (a queue with rate_key) ----
# Forget the keys whose bucket is full again (their arrival time passed), then read the rest: the keys that may be
# out of tokens. Parameters: namespace, queue, now.
EXPIRE_RATE_KEYS = "DELETE FROM conveyor_rate_keys WHERE namespace = ? AND queue = ? AND tat <= ?"
SELECT_RATE_KEYS = "SELECT key, tat FROM conveyor_rate_keys WHERE namespace = ? AND queue = ? AND tat > ?"
# The keys' limiters after a claim started jobs of them, in one statement. ?1 namespace, ?2 queue, ?3 a JSON array
# of [key, tat].
ADVANCE_RATE_KEYS = """
INSERT INTO conveyor_rate_keys (namespace, queue, key, tat)
SELECT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?3) WHERE true
ON CONFLICT (namespace, queue, key) DO UPDATE SET tat = excluded.tat
"""
# Store.rate_state: the queue's own bucket, the keys holding state and the most limited of them.
# Parameters: namespace, queue, now, limit.
RATE_STATE = """
SELECT (SELECT rate_tat FROM conveyor_queues WHERE namespace = ?1 AND name = ?2),
       (SELECT count(*) FROM conveyor_rate_keys WHERE namespace = ?1 AND queue = ?2 AND tat > ?3),
       (SELECT json_group_array(json_array(key, tat)) FROM (
            SELECT key, tat FROM conveyor_rate_keys WHERE namespace = ?1 AND queue = ?2 AND tat > ?3
            ORDER BY tat DESC, key LIMIT ?4))
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
    worker_id = ?2, lease_expires_at = ?3, cancel_requested = 0, lease_token = ?6
WHERE rowid = (
    SELECT rowid FROM conveyor_jobs
    WHERE namespace = ?4 AND serial_key = ?5 AND serial_key IS NOT NULL AND eligible = 1 AND status = 'pending'
      AND run_at <= ?1
)
RETURNING {JOB_JSON}
"""

# Which of the leases (?1: JSON array of [id, token]) still hold, with their cancel flags.
HELD_LEASES = """
SELECT json_group_array(json_array(j.id, j.lease_token, j.cancel_requested))
FROM json_each(?1) AS f
JOIN conveyor_jobs AS j
  ON j.id = json_extract(f.value, '$[0]') AND j.lease_token = json_extract(f.value, '$[1]')
 AND +j.status = 'processing'
"""

# Extend the held leases found by HELD_LEASES (?3: JSON array of ids).
HEARTBEAT = """
UPDATE conveyor_jobs SET lease_expires_at = ?1, updated = ?2
WHERE id IN (SELECT value FROM json_each(?3)) AND +status = 'processing'
"""

# A try passed its timeout while its thread runs on (Store.mark_timed_out), fenced on the lease token. Parameters:
# now, id, token.
MARK_TIMED_OUT = """
UPDATE conveyor_jobs SET timed_out_at = ?1, updated = ?1
WHERE id = ?2 AND status = 'processing' AND lease_token = ?3
"""

# ---- the next due time --------------------------------------------------------------------------------------------

# The earliest run_at among one (namespace, queue, task) range's claimable pending jobs (eligible: lane heads of idle
# lanes), due or not. The claim index is ordered by priority first, so a plain MIN(run_at) would read every job of
# the queue; instead a recursive walk visits each distinct priority with one index seek (a "loose index scan") and
# takes that priority's first run_at with another: a few seeks, however long the backlog. Parameters: namespace,
# queue.
NEXT_DUE_IN_RANGE = """
WITH RECURSIVE prio(p) AS (
    SELECT MIN(priority) FROM conveyor_jobs
    WHERE namespace = ?1 AND queue = ?2 AND task = ?3 AND status = 'pending' AND eligible = 1
    UNION ALL
    SELECT (SELECT MIN(priority) FROM conveyor_jobs
            WHERE namespace = ?1 AND queue = ?2 AND task = ?3 AND status = 'pending' AND eligible = 1
              AND priority > prio.p)
    FROM prio WHERE prio.p IS NOT NULL
)
SELECT MIN((SELECT MIN(run_at) FROM conveyor_jobs
            WHERE namespace = ?1 AND queue = ?2 AND task = ?3 AND status = 'pending' AND eligible = 1
              AND priority = prio.p))
FROM prio WHERE prio.p IS NOT NULL
"""

# NEXT_DUE_IN_RANGE for a queue with a limit per concurrency key or a rate key: ?4 is a JSON array of the keys at
# their limit, ?5 the rate key (or NULL), ?6 its payload path, ?7 a JSON array of the rate keys out of tokens.
NEXT_DUE_IN_RANGE_KEYED = NEXT_DUE_IN_RANGE.replace(
    "AND eligible = 1",
    "AND eligible = 1 AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(?4)))"
    " AND (?5 IS NULL OR " + RATE_KEY_OF.format(k="?5", p="?6", t="") + " NOT IN (SELECT value FROM json_each(?7)))",
)

# ---- finish -------------------------------------------------------------------------------------------------------

# Many finishes in one statement: ?2 is a JSON array of [id, token, status, last_error, result_json, run_at,
# snooze] (run_at only for retries; snooze 1: the try does not count and last_error is kept unless given), ?1 is
# now. Only entries that HELD_LEASES found live are passed. The unary `+` keeps
# the planner from walking the status index: it must look each id up by primary key.
FINISH_MANY = """
UPDATE conveyor_jobs
SET status = json_extract(f.value, '$[2]'),
    updated = ?1,
    finished_at = CASE WHEN json_extract(f.value, '$[2]') IN ('completed', 'failed', 'cancelled') THEN ?1 END,
    lease_expires_at = NULL,
    worker_id = NULL,
    lease_token = NULL,
    last_error = CASE WHEN json_extract(f.value, '$[6]') THEN COALESCE(json_extract(f.value, '$[3]'), last_error)
                      ELSE json_extract(f.value, '$[3]') END,
    attempts = CASE WHEN json_extract(f.value, '$[6]') THEN MAX(0, attempts - 1) ELSE attempts END,
    result = CASE WHEN json_extract(f.value, '$[2]') = 'completed' THEN json_extract(f.value, '$[4]') ELSE result END,
    run_at = COALESCE(json_extract(f.value, '$[5]'), run_at),
    cancel_requested = CASE WHEN json_extract(f.value, '$[2]') = 'pending' THEN 0 ELSE cancel_requested END
FROM json_each(?2) AS f
WHERE conveyor_jobs.id = json_extract(f.value, '$[0]')
  AND +conveyor_jobs.status = 'processing'
  AND conveyor_jobs.lease_token = json_extract(f.value, '$[1]')
"""

# A graceful-shutdown hand-back: the try is not counted, and the job keeps its run_at (its place in the order)
# unless one is given. Parameters: updated, run_at, error, id, token.
RELEASE = """
UPDATE conveyor_jobs
SET status = 'pending', updated = ?, finished_at = NULL, lease_expires_at = NULL, worker_id = NULL,
    lease_token = NULL, attempts = MAX(0, attempts - 1), try_number = MAX(0, try_number - 1),
    run_at = COALESCE(?, run_at), last_error = COALESCE(?, last_error)
WHERE id = ? AND status = 'processing' AND lease_token = ?
"""

# ?1: JSON array of [job_id, try_number, outcome, status_code, started_at, finished_at, worker_id, result_json,
# error, traceback, lease_token]: one record per claim.
INSERT_ATTEMPTS = """
INSERT OR REPLACE INTO conveyor_attempts (job_id, try_number, outcome, status_code, started_at, finished_at,
                                          worker_id, result, error, traceback, lease_token)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
       json_extract(value, '$[9]'), json_extract(value, '$[10]')
FROM json_each(?1)
"""

# The records of refused (stale) reports, already turned into LOST ones (model.not_applied); same layout. Nothing
# for a job that no longer exists, and a claim's record that is not LOST (a repeated report of an applied try) wins.
INSERT_STALE_ATTEMPTS = """
INSERT INTO conveyor_attempts (job_id, try_number, outcome, status_code, started_at, finished_at, worker_id, result,
                               error, traceback, lease_token)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
       json_extract(value, '$[9]'), json_extract(value, '$[10]')
FROM json_each(?1)
WHERE EXISTS (SELECT 1 FROM conveyor_jobs WHERE id = json_extract(value, '$[0]'))
ON CONFLICT (job_id, lease_token) DO UPDATE
SET try_number = excluded.try_number, outcome = excluded.outcome, status_code = excluded.status_code,
    started_at = excluded.started_at, finished_at = excluded.finished_at, worker_id = excluded.worker_id,
    result = excluded.result, error = excluded.error, traceback = excluded.traceback
WHERE conveyor_attempts.outcome = 'lost'
"""

# ---- maintenance --------------------------------------------------------------------------------------------------

SELECT_EXPIRED = """
SELECT id, try_number, worker_id, started_at, lease_token FROM conveyor_jobs INDEXED BY conveyor_jobs_processing
WHERE status = 'processing' AND lease_expires_at <= ?
ORDER BY lease_expires_at, id
LIMIT ?
"""

# The earliest lease of a processing job (Store.next_lease_expiry): a scan of the few processing rows.
NEXT_LEASE_EXPIRY = """
SELECT min(lease_expires_at) FROM conveyor_jobs INDEXED BY conveyor_jobs_processing
WHERE status = 'processing'
"""

# A rescued job keeps its run_at: it goes back to its place in the claim order, not behind the backlog.
RESCUE = f"""
UPDATE conveyor_jobs
SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END,
    lease_expires_at = NULL, worker_id = NULL, lease_token = NULL, last_error = ?2, updated = ?1
WHERE id = ?3 AND status = 'processing' AND lease_token IS ?4
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
ORDER BY {{order}}
LIMIT :limit OFFSET :offset
"""

# Store.list_jobs: each filter's condition (joined with AND; `scheduled`/`retrying` as `NOT (...)` when False).
LIST_FILTERS = {
    "namespace": "namespace = :namespace",
    "queue": "queue = :queue",
    "task": "task = :task",
    "status": "status = :status",
    "user_id": "user_id = :user_id",
    "ids": "id IN (SELECT value FROM json_each(:ids))",
    "scheduled": "(status = 'pending' AND run_at > :now AND attempts = 0)",
    "retrying": "(status = 'pending' AND attempts > 0)",
    # a prefix of the id is a range of the primary key; a suffix a LIKE (the UI shows ids by their end)
    "id_fragment": "((id >= :id_lo AND id < :id_hi) OR id LIKE :id_suffix)",
    "q": "payload LIKE :q ESCAPE '\\'",
    "path": "(payload -> :path) IN (SELECT value FROM json_each(:path_values))",
    "queue_contains": "queue LIKE :queue_contains ESCAPE '\\'",
    "task_contains": "task LIKE :task_contains ESCAPE '\\'",
}

# The keyset seek by the sort's direction: a row-value comparison on (column, id), which the (created, id) index
# answers as a range. finished_at lists unfinished jobs last (NULLS LAST).
KEYSET_AFTER = {False: "({col}, id) > (:after_value, :after_id)", True: "({col}, id) < (:after_value, :after_id)"}
KEYSET_AFTER_NULLABLE = {
    False: "(({col}, id) > (:after_value, :after_id) OR {col} IS NULL)",
    True: "(({col}, id) < (:after_value, :after_id) OR {col} IS NULL)",
}
KEYSET_AFTER_NULL = {False: "({col} IS NULL AND id > :after_id)", True: "({col} IS NULL AND id < :after_id)"}
# NULLS LAST only where a column can be NULL (finished_at): on the others it would keep the planner from walking
# the (created, id) index backwards, and every page would sort the whole match.
ORDER = {False: "{col} ASC, id ASC", True: "{col} DESC, id DESC"}
ORDER_NULLABLE = {False: "{col} ASC NULLS LAST, id ASC", True: "{col} DESC NULLS LAST, id DESC"}

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

# model.attempt_order: by try number, lost records of a number first.
SELECT_ATTEMPTS = f"""
SELECT {ATTEMPT_COLUMNS}
FROM conveyor_attempts WHERE job_id = ? ORDER BY try_number, outcome <> 'lost', started_at, lease_token
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
    updated = ?1, unique_hash = NULL, unique_states = NULL
WHERE id = ?2 AND status IN ('failed', 'cancelled')
RETURNING {JOB_JSON}
"""

DELETE_JOB = "DELETE FROM conveyor_jobs WHERE id = ?"
DELETE_ATTEMPTS_OF_USER = (
    "DELETE FROM conveyor_attempts WHERE job_id IN (SELECT id FROM conveyor_jobs WHERE user_id = ?)"
)
DELETE_JOBS_OF_USER = "DELETE FROM conveyor_jobs WHERE user_id = ?"
DELETE_ATTEMPTS_OF_JOB = "DELETE FROM conveyor_attempts WHERE job_id = ?"

# A job already due keeps its run_at (its place in the order).
RUN_NOW = f"""
UPDATE conveyor_jobs SET run_at = MIN(run_at, ?1), updated = ?1
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
# Deleting a namespace takes its jobs and their attempts with it (GS2). Its queue settings are reset, not deleted:
# the rows also say "this range exists" to the claim, and other processes cache that they registered them.
DELETE_ATTEMPTS_OF_NAMESPACE = """
DELETE FROM conveyor_attempts WHERE job_id IN (SELECT id FROM conveyor_jobs WHERE namespace = ?)
"""
DELETE_JOBS_OF_NAMESPACE = "DELETE FROM conveyor_jobs WHERE namespace = ?"
RESET_QUEUES_OF_NAMESPACE = """
UPDATE conveyor_queues
SET paused = 0, concurrency = NULL, configured = 0, rate_limit = NULL, rate_period = NULL, rate_burst = NULL,
    rate_tat = NULL, key_concurrency = NULL, rate_key = NULL
WHERE namespace = ?
"""
DELETE_RATE_KEYS_OF_NAMESPACE = "DELETE FROM conveyor_rate_keys WHERE namespace = ?"

# ---- queues -------------------------------------------------------------------------------------------------------

# Every setting at once; the limiter's state (rate_tat) is kept. Parameters: namespace, name, paused, concurrency,
# rate_limit, rate_period, rate_burst, key_concurrency, rate_key.
UPSERT_QUEUE_SETTINGS = """
INSERT INTO conveyor_queues (namespace, name, paused, concurrency, rate_limit, rate_period, rate_burst,
                             key_concurrency, rate_key, configured)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (namespace, name) DO UPDATE
SET paused = excluded.paused, concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
    rate_period = excluded.rate_period, rate_burst = excluded.rate_burst, key_concurrency = excluded.key_concurrency,
    rate_key = excluded.rate_key, configured = 1
"""

# One queue's settings (update_queue_settings reads them in its write transaction, then upserts).
SELECT_ONE_QUEUE_SETTINGS = """
SELECT paused, concurrency, rate_limit, rate_period, rate_burst, key_concurrency, rate_key FROM conveyor_queues
WHERE namespace = ? AND name = ?
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
SELECT namespace, name, paused, concurrency, configured, rate_limit, rate_period, rate_burst, key_concurrency,
       rate_key
FROM conveyor_queues
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
KV_VALUE = "SELECT value FROM conveyor_kv WHERE key = ?"
KV_DELETE = "DELETE FROM conveyor_kv WHERE key = ?"

# ---- cron schedules (runtime ones as documents; the runs of every schedule) ------------------------------------

SCHEDULE_INSERT = "INSERT INTO conveyor_schedules (name, doc) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
SCHEDULE_UPDATE = "UPDATE conveyor_schedules SET doc = ?2 WHERE name = ?1"
SCHEDULE_GET = "SELECT doc FROM conveyor_schedules WHERE name = ?"
SCHEDULE_LIST = "SELECT doc FROM conveyor_schedules ORDER BY name"
SCHEDULE_DELETE = "DELETE FROM conveyor_schedules WHERE name = ?"
SCHEDULE_RUNS_DELETE = "DELETE FROM conveyor_schedule_runs WHERE schedule = ?"
# The first record of an occurrence stays. Parameters: schedule, occurrence µs, doc.
SCHEDULE_RUN_INSERT = """
INSERT INTO conveyor_schedule_runs (schedule, occurrence, doc) VALUES (?, ?, ?)
ON CONFLICT (schedule, occurrence) DO NOTHING
"""
# Keep the newest `keep` runs of a schedule (no row at that offset: fewer runs, nothing deleted). Parameters:
# schedule, keep.
SCHEDULE_RUNS_TRIM = """
DELETE FROM conveyor_schedule_runs
WHERE schedule = ?1 AND occurrence < (
    SELECT occurrence FROM conveyor_schedule_runs WHERE schedule = ?1 ORDER BY occurrence DESC LIMIT 1 OFFSET ?2 - 1
)
"""
SCHEDULE_RUNS = "SELECT doc FROM conveyor_schedule_runs WHERE schedule = ? ORDER BY occurrence DESC LIMIT ?"

# ---- enqueue_on_connection checks ---------------------------------------------------------------------------------

# drop() keeps a file that holds tables of the application's own and drops only Conveyor's tables from it
# (SQLite's internal tables start with sqlite_).
CONVEYOR_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'conveyor\\_%' ESCAPE '\\'"
FOREIGN_TABLES = """
SELECT name FROM sqlite_master
WHERE type = 'table' AND name NOT LIKE 'conveyor\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
ORDER BY name
"""

DATABASE_LIST = "PRAGMA database_list"


def list_where(conditions: Sequence[str]) -> str:
    """`WHERE a AND b` from list conditions (empty when none)."""
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


# ---- restore (Store.restore_jobs) -----------------------------------------------------------------------------

RESTORE_TAKEN = "SELECT id FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"

RESTORE_UNIQUE_HOLDER = """
SELECT id FROM conveyor_jobs WHERE namespace = ? AND unique_key = ? AND status IN ('pending', 'processing')
"""

# every stored field in codec order; the lane triggers set `eligible` (serial_key is generated)
RESTORE_JOB = (
    f"INSERT INTO conveyor_jobs ({', '.join(column_names(STORED_JOB_FIELDS))}) "
    f"VALUES ({', '.join('?' for _ in STORED_JOB_FIELDS)})"
)

RESTORE_ATTEMPT = (
    f"INSERT INTO conveyor_attempts ({ATTEMPT_COLUMNS}) VALUES ({', '.join('?' for _ in STORED_ATTEMPT_FIELDS)})"
)

# ---- events across processes (store/sqlite/events.py) ------------------------------------------------------------
EVENTS_INSERT = "INSERT INTO conveyor_events (at, message) VALUES (?, ?)"
EVENTS_PRUNE = "DELETE FROM conveyor_events WHERE at < ? AND seq < (SELECT max(seq) FROM conveyor_events)"
EVENTS_LAST = "SELECT coalesce(max(seq), 0) FROM conveyor_events"
EVENTS_AFTER = "SELECT seq, message FROM conveyor_events WHERE seq > ? ORDER BY seq LIMIT 1000"
