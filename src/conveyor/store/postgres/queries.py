"""Every SQL statement of the PostgreSQL store, written out as SQL.

Placeholders in braces are filled once when the store is built: `{schema}` is the quoted schema name (validated to
be a plain identifier), `{job_columns}` / `{j_job_columns}` the job column list (bare / qualified by `j.`): every
stored field of `conveyor.codec.JOB_FIELDS`, in that order, which is how the store's decoder reads them.
Parameters are psycopg's `%(name)s`.

Time is the database's own clock, `statement_timestamp()`: stable inside a statement (so it can bound an index
scan, unlike `clock_timestamp()`), and still correct inside a long transaction (unlike `now()`, the transaction's
start), which matters for transactional handlers.
"""

from __future__ import annotations

from conveyor.codec import STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, column_names

JOB_COLUMNS: tuple[str, ...] = column_names(STORED_JOB_FIELDS)
"""The jobs table's columns as the store reads them: every stored Job field, named after it, in its order."""

ATTEMPT_COLUMNS = ", ".join(column_names(STORED_ATTEMPT_FIELDS))

# ---- migrations -------------------------------------------------------------------------------------------------

# Taken before anything else on open: one process at a time checks and applies migrations for this schema.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('conveyor.migrate'), hashtext(%(schema)s))"

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT statement_timestamp()
)
"""

APPLIED_MIGRATIONS = "SELECT version FROM {schema}.schema_migrations"

RECORD_MIGRATION = "INSERT INTO {schema}.schema_migrations (version, name) VALUES (%(version)s, %(name)s)"

# The wake-up: every INSERT into jobs notifies listeners once per statement, when its transaction commits. Being
# a trigger, it fires for the caller's own transaction too (transactional enqueue), and only on its commit.
# An enqueue that hands its jobs to an idle worker turns it off for its own transaction (HANDOFF_SETUP) because it
# decides itself, after its claim, whether anybody else needs waking (HANDOFF_CLAIM).
CREATE_NOTIFY_TRIGGER = """
CREATE OR REPLACE FUNCTION {schema}.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('conveyor.notify', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify({channel}, '');
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS jobs_notify ON {schema}.jobs;
CREATE TRIGGER jobs_notify AFTER INSERT ON {schema}.jobs FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs();
"""

# A VOLATILE function takes a fresh snapshot for its own query: the claim calls it *after* locking a capped
# queue's settings row, so it counts the running jobs that the previous lock holder just committed.
CREATE_RUNNING_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.running_jobs(p_namespace text, p_queue text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT count(*) FROM {schema}.jobs WHERE status = 'processing' AND namespace = p_namespace AND queue = p_queue
$$
"""

# The same for a queue with a limit per concurrency key: its processing jobs per key (keys without any: not listed).
CREATE_RUNNING_KEYS_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.running_keys(p_namespace text, p_queue text)
RETURNS TABLE (key text, n bigint)
LANGUAGE sql VOLATILE AS $$
    SELECT concurrency_key, count(*) FROM {schema}.jobs
    WHERE status = 'processing' AND namespace = p_namespace AND queue = p_queue AND concurrency_key IS NOT NULL
    GROUP BY concurrency_key
$$
"""

# A job's rate-limit bucket in a queue partitioned by rate_key (model.rate_key_value): a job column, or a top-level
# payload field when it is a string or an integer below 2^53 (its digits); '' for none. Inlined by the planner.
CREATE_RATE_KEY_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.rate_key_of(p_kind text, p_user text, p_group text, p_ckey text, p_payload json)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(CASE p_kind
        WHEN 'user_id' THEN p_user
        WHEN 'group_key' THEN p_group
        WHEN 'concurrency_key' THEN p_ckey
        ELSE CASE json_typeof(p_payload -> substr(p_kind, 9))
             WHEN 'string' THEN p_payload ->> substr(p_kind, 9)
             WHEN 'number' THEN CASE WHEN (p_payload ->> substr(p_kind, 9)) ~ '^-?[0-9]{1,16}$'
                                      AND abs((p_payload ->> substr(p_kind, 9))::numeric) < 9007199254740992
                                     THEN ((p_payload ->> substr(p_kind, 9))::numeric)::text END
             END
        END, '')
$$
"""

# A rate_key queue's keys that hold state (arrival time after p_now: their bucket is not full), with a fresh
# snapshot like running_jobs: the claim calls it after locking the queue's settings row.
CREATE_RATE_KEYS_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.rate_keys_held(p_namespace text, p_queue text, p_now bigint)
RETURNS TABLE (key text, tat bigint)
LANGUAGE sql VOLATILE AS $$
    SELECT key, tat FROM {schema}.rate_keys WHERE namespace = p_namespace AND queue = p_queue AND tat > p_now
$$
"""

# ---- enqueue ----------------------------------------------------------------------------------------------------

# One statement for the whole batch, in input order so that the first of equal unique keys wins. Rows whose
# unique key matches an active job are skipped by ON CONFLICT; the caller then looks those up (ENQUEUE_EXISTING).
# Batches arrive as one JSON array of records: one C-encoded parameter instead of thirteen Python-built arrays.
ENQUEUE = """
INSERT INTO {schema}.jobs (id, namespace, queue, task, payload, priority, run_at, max_attempts, created, updated,
                           user_id, group_key, unique_key, serial_key, concurrency_key)
SELECT n.id, n.namespace, n.queue, n.task, n.payload, n.priority, n.run_at, n.max_attempts, n.created, n.created,
       n.user_id, n.group_key, n.unique_key, n.serial_key, n.concurrency_key
FROM json_to_recordset(%(batch)s::json)
     AS n(ord integer, id text, namespace text, queue text, task text, payload json, priority smallint,
          run_at timestamptz, max_attempts integer, created timestamptz, user_id text, group_key text,
          unique_key text, serial_key text, concurrency_key text)
ORDER BY n.ord
ON CONFLICT (namespace, unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')
DO NOTHING
RETURNING id
"""

# Large batches without unique keys stream through COPY: psycopg formats COPY rows in C, far cheaper than
# building thirteen Python arrays, and COPY fires the same statement trigger (NOTIFY) as INSERT.
ENQUEUE_COPY = """
COPY {schema}.jobs (id, namespace, queue, task, payload, priority, run_at, max_attempts, created, updated,
                    user_id, group_key, unique_key, serial_key, concurrency_key)
FROM STDIN
"""

ENQUEUE_EXISTING = """
SELECT {job_columns}
FROM {schema}.jobs
WHERE (namespace, unique_key) IN (SELECT * FROM unnest(%(namespaces)s::text[], %(unique_keys)s::text[]))
  AND status IN ('pending', 'processing')
"""

# Unique jobs (`unique=`): the partial unique index jobs_unique_hash (migration 7) holds a row while its status is
# among its own states; it is the ON CONFLICT arbiter, so check and insert are one atomic step. Skipped rows are
# answered with their holder (ENQUEUE_UNIQUE_EXISTING), whose payload/run_at a duplicate may replace while it is
# pending (REPLACE_PENDING).
_UNIQUE_HELD = """unique_hash IS NOT NULL AND (unique_states & CASE status WHEN 'pending' THEN 1
        WHEN 'processing' THEN 2 WHEN 'completed' THEN 4 WHEN 'failed' THEN 8 ELSE 16 END) <> 0"""

ENQUEUE_UNIQUE = f"""
INSERT INTO {{schema}}.jobs (id, namespace, queue, task, payload, priority, run_at, max_attempts, created, updated,
                           user_id, group_key, serial_key, concurrency_key, unique_hash, unique_states)
SELECT n.id, n.namespace, n.queue, n.task, n.payload, n.priority, n.run_at, n.max_attempts, n.created, n.created,
       n.user_id, n.group_key, n.serial_key, n.concurrency_key, n.unique_hash, n.unique_states
FROM json_to_recordset(%(batch)s::json)
     AS n(ord integer, id text, namespace text, queue text, task text, payload json, priority smallint,
          run_at timestamptz, max_attempts integer, created timestamptz, user_id text, group_key text,
          serial_key text, concurrency_key text, unique_hash text, unique_states smallint)
ORDER BY n.ord
ON CONFLICT (namespace, unique_hash) WHERE {_UNIQUE_HELD}
DO NOTHING
RETURNING id
"""

ENQUEUE_UNIQUE_EXISTING = f"""
SELECT {{job_columns}}, unique_hash
FROM {{schema}}.jobs
WHERE (namespace, unique_hash) IN (SELECT * FROM unnest(%(namespaces)s::text[], %(hashes)s::text[]))
  AND {_UNIQUE_HELD}
"""

REPLACE_PENDING = """
UPDATE {schema}.jobs
SET payload = coalesce(%(payload)s::json, payload), run_at = coalesce(%(run_at)s, run_at),
    updated = statement_timestamp()
WHERE id = %(id)s AND status = 'pending'
RETURNING {job_columns}
"""

JOBS_BY_ID = "SELECT {job_columns} FROM {schema}.jobs WHERE id = ANY(%(ids)s::text[])"

# ---- claims -----------------------------------------------------------------------------------------------------

# The claim, in one round trip:
#   arms     - the (queue, task) ranges of jobs_ready to read: every wanted queue × every served task, or, when
#              the claim serves any task, the tasks pending in each queue (any_task: a loose index scan, one index
#              probe per distinct task) — so jobs of a task the worker does not serve are never read;
#   off      - namespaces whose settings have auto_run off, read inside this statement: no stale cache decides;
#   paused   - paused (namespace, queue) pairs among the wanted queues;
#   capped   - queues with a concurrency cap: their settings rows are locked (in a fixed order, so claimers never
#              deadlock) and their free room counted with a fresh snapshot, which makes caps exact across workers;
#   picked   - per arm, the first due pending jobs in claim order from the jobs_ready index, honouring
#              namespaces, pauses, caps and serial lanes (only a lane's head, only while its lane is idle),
#              locked with SKIP LOCKED so concurrent claimers take disjoint jobs (each arm locks at most `limit`
#              rows, of which `chosen` keeps the first `limit` overall: the price of reading per task);
#   key_busy - for queues with a limit per concurrency key: processing jobs per key, counted after the lock as for
#              caps; `picked` passes over the jobs of keys at their limit (so they never hide the jobs behind them);
#   chosen   - the batch: merged claim order, no more per capped queue than its room, no more per key than its
#              room, at most `limit`;
#   rated    - rate-limited queues advance their limiter (GCRA: the theoretical arrival time `rate_tat`, µs) by the
#              jobs chosen from them; their room above already counted what the limiter allows now (`capped`
#              locks the rows, so concurrent claims take turns and see each other's advance);
# and the UPDATE marks them processing under the lease. CLAIM and HANDOFF_CLAIM are built from these same parts,
# so a hand-off claims by exactly the rules of `claim`.
#
# `synchronous_commit`: 'off' lets the worker's own state changes commit without waiting for the WAL flush
# (docs/postgres.md); NULL keeps the session's setting, for a claim that commits together with an enqueue.
# The ranges of jobs_ready a claim reads (CLAIM, HANDOFF_CLAIM and NEXT_DUE alike), and the namespaces whose auto_run
# is off, read inside the statement. Two variants, each statement built with either:
# * _ARMS_SERVED: every wanted queue × every served task (what workers send). The product is formed by the caller and
#   sent as two parallel arrays, so the planner estimates one unnest, not a cross product or a recursive walk: an
#   inflated estimate once made it JIT-compile NEXT_DUE for ~90 ms a call.
# * _ARMS_ANY_TASK: a claim of any task (tools, tests): the tasks pending in each queue, found by a loose index scan
#   (one index probe per distinct task).
_OFF = """off AS MATERIALIZED (
    SELECT n.name FROM {schema}.namespaces n WHERE NOT n.auto_run
),
"""

_ARMS_SERVED = (
    """arms AS MATERIALIZED (
    SELECT a.queue, a.task FROM unnest(%(arm_queues)s::text[], %(arm_tasks)s::text[]) AS a(queue, task)
),
"""
    + _OFF
)

_ARMS_ANY_TASK = (
    """any_task(queue, task) AS (
    SELECT q.name, (SELECT min(j.task) FROM {schema}.jobs j WHERE j.status = 'pending' AND j.queue = q.name)
    FROM unnest(%(queues)s::text[]) AS q(name)
    UNION ALL
    SELECT a.queue,
           (SELECT min(j.task) FROM {schema}.jobs j
            WHERE j.status = 'pending' AND j.queue = a.queue AND j.task > a.task)
    FROM any_task a
    WHERE a.task IS NOT NULL
),
arms AS MATERIALIZED (
    SELECT a.queue, a.task FROM any_task a WHERE a.task IS NOT NULL
),
"""
    + _OFF
)

_CLAIM_CTES = """
commit_mode AS MATERIALIZED (
    SELECT set_config('synchronous_commit',
                      coalesce(%(synchronous_commit)s::text, current_setting('synchronous_commit')), true) AS value
),
{arms}paused AS MATERIALIZED (
    SELECT s.namespace, s.queue
    FROM {schema}.queue_settings s
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.paused
),
capped AS MATERIALIZED (
    SELECT c.namespace, c.queue, c.rate_interval, c.rate_from, c.key_concurrency, c.rate_key, c.rate_tolerance,
           c.now_us,
           least(CASE WHEN c.concurrency IS NOT NULL
                      THEN c.concurrency - {schema}.running_jobs(c.namespace, c.queue) END,
                 CASE WHEN c.rate_interval IS NULL OR c.rate_key IS NOT NULL THEN NULL
                      WHEN c.now_us + c.rate_tolerance < c.rate_from THEN 0
                      ELSE (c.now_us + c.rate_tolerance - c.rate_from) / c.rate_interval + 1 END) AS room
    FROM (
        SELECT s.namespace, s.queue, s.concurrency, s.rate_interval, s.rate_tolerance, s.key_concurrency, t.now_us,
               greatest(coalesce(s.rate_tat, 0), t.now_us) AS rate_from,
               CASE WHEN s.rate_interval IS NOT NULL THEN s.rate_key END AS rate_key
        FROM {schema}.queue_settings s,
             (SELECT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS now_us) t
        WHERE s.queue = ANY(%(queues)s::text[])
          AND (s.concurrency IS NOT NULL OR s.rate_interval IS NOT NULL OR s.key_concurrency IS NOT NULL)
          AND NOT s.paused
        ORDER BY s.namespace, s.queue
        FOR UPDATE OF s
    ) c
),
key_busy AS MATERIALIZED (
    SELECT c.namespace, c.queue, k.key, k.n
    FROM capped c CROSS JOIN LATERAL {schema}.running_keys(c.namespace, c.queue) k
    WHERE c.key_concurrency IS NOT NULL
),
key_tat AS MATERIALIZED (
    SELECT c.namespace, c.queue, k.key, k.tat,
           CASE WHEN c.now_us + c.rate_tolerance < k.tat THEN 0
                ELSE (c.now_us + c.rate_tolerance - k.tat) / c.rate_interval + 1 END AS allowed
    FROM capped c CROSS JOIN LATERAL {schema}.rate_keys_held(c.namespace, c.queue, c.now_us) k
    WHERE c.rate_key IS NOT NULL
),
picked AS (
    SELECT p.id, p.namespace, p.queue, p.priority, p.run_at, p.concurrency_key, p.rate_key
    FROM arms a
    CROSS JOIN LATERAL (
        SELECT j.id, j.namespace, j.queue, j.priority, j.run_at, j.concurrency_key,
               (SELECT {schema}.rate_key_of(x.rate_key, j.user_id, j.group_key, j.concurrency_key, j.payload)
                FROM capped x WHERE x.namespace = j.namespace AND x.queue = j.queue AND x.rate_key IS NOT NULL)
               AS rate_key
        FROM {schema}.jobs j
        WHERE j.status = 'pending'
          AND j.queue = a.queue
          AND j.task = a.task
          AND j.run_at <= statement_timestamp()
          AND (%(namespaces)s::text[] IS NULL OR j.namespace = ANY(%(namespaces)s::text[]))
          AND j.namespace <> ALL(%(exclude)s::text[])
          AND NOT EXISTS (SELECT 1 FROM off x WHERE x.name = j.namespace)
          AND NOT EXISTS (SELECT 1 FROM paused x WHERE x.namespace = j.namespace AND x.queue = j.queue)
          AND NOT EXISTS (SELECT 1 FROM capped x WHERE x.namespace = j.namespace AND x.queue = j.queue
                                                   AND x.room <= 0)
          AND (j.concurrency_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM capped x
                   WHERE x.namespace = j.namespace AND x.queue = j.queue AND x.key_concurrency IS NOT NULL
                     AND x.key_concurrency <= coalesce((SELECT kb.n FROM key_busy kb
                                                        WHERE kb.namespace = j.namespace AND kb.queue = j.queue
                                                          AND kb.key = j.concurrency_key), 0)))
          AND NOT EXISTS (
                   SELECT 1 FROM capped x JOIN key_tat kt ON kt.namespace = x.namespace AND kt.queue = x.queue
                   WHERE x.namespace = j.namespace AND x.queue = j.queue AND x.rate_key IS NOT NULL
                     AND kt.allowed <= 0
                     AND kt.key = {schema}.rate_key_of(x.rate_key, j.user_id, j.group_key, j.concurrency_key,
                                                       j.payload))
          AND (j.serial_key IS NULL OR (
                   NOT EXISTS (SELECT 1 FROM {schema}.jobs h
                               WHERE h.status = 'pending' AND h.namespace = j.namespace
                                 AND h.serial_key = j.serial_key AND (h.priority, h.id) < (j.priority, j.id))
               AND NOT EXISTS (SELECT 1 FROM {schema}.jobs r
                               WHERE r.status = 'processing' AND r.namespace = j.namespace
                                 AND r.serial_key = j.serial_key)))
        ORDER BY j.priority, j.run_at, j.id
        LIMIT %(limit)s
        FOR UPDATE OF j SKIP LOCKED
    ) p
),
chosen AS (
    SELECT r.id, r.namespace, r.queue, r.rate_key
    FROM (
        SELECT p.*, row_number() OVER (PARTITION BY p.namespace, p.queue ORDER BY p.priority, p.run_at, p.id) AS n,
               row_number() OVER (PARTITION BY p.namespace, p.queue, p.concurrency_key
                                  ORDER BY p.priority, p.run_at, p.id) AS kn,
               row_number() OVER (PARTITION BY p.namespace, p.queue, p.rate_key
                                  ORDER BY p.priority, p.run_at, p.id) AS rn
        FROM picked p
    ) r
    LEFT JOIN capped x ON x.namespace = r.namespace AND x.queue = r.queue
    LEFT JOIN key_busy kb ON kb.namespace = r.namespace AND kb.queue = r.queue AND kb.key = r.concurrency_key
    LEFT JOIN key_tat kt ON kt.namespace = r.namespace AND kt.queue = r.queue AND kt.key = r.rate_key
    WHERE (x.room IS NULL OR r.n <= x.room)
      AND (r.concurrency_key IS NULL OR x.key_concurrency IS NULL OR r.kn <= x.key_concurrency - coalesce(kb.n, 0))
      AND (r.rate_key IS NULL OR r.rn <= coalesce(kt.allowed, x.rate_tolerance / x.rate_interval + 1))
    ORDER BY r.priority, r.run_at, r.id
    LIMIT %(limit)s
),
rated AS (
    UPDATE {schema}.queue_settings s
    SET rate_tat = x.rate_from + n.taken * x.rate_interval
    FROM capped x
    JOIN (SELECT c.namespace, c.queue, count(*) AS taken FROM chosen c GROUP BY c.namespace, c.queue) n
      ON n.namespace = x.namespace AND n.queue = x.queue
    WHERE x.rate_interval IS NOT NULL AND x.rate_key IS NULL AND s.namespace = x.namespace AND s.queue = x.queue
),
rated_keys AS (
    INSERT INTO {schema}.rate_keys (namespace, queue, key, tat)
    SELECT n.namespace, n.queue, n.rate_key, greatest(coalesce(kt.tat, 0), x.now_us) + n.taken * x.rate_interval
    FROM (SELECT c.namespace, c.queue, c.rate_key, count(*) AS taken FROM chosen c
          WHERE c.rate_key IS NOT NULL GROUP BY c.namespace, c.queue, c.rate_key) n
    JOIN capped x ON x.namespace = n.namespace AND x.queue = n.queue
    LEFT JOIN key_tat kt ON kt.namespace = n.namespace AND kt.queue = n.queue AND kt.key = n.rate_key
    ON CONFLICT (namespace, queue, key) DO UPDATE SET tat = excluded.tat
),
forgotten_keys AS (
    DELETE FROM {schema}.rate_keys d
    USING capped x
    WHERE x.rate_key IS NOT NULL AND x.now_us %% 16 = 0  -- 1 claim in 16 (by the clock's µs): amortized, bounded
      AND d.namespace = x.namespace AND d.queue = x.queue AND d.tat <= x.now_us
      AND NOT EXISTS (SELECT 1 FROM chosen c
                      WHERE c.namespace = d.namespace AND c.queue = d.queue AND c.rate_key = d.key)
)
"""

_CLAIM_UPDATE = """
UPDATE {schema}.jobs j
SET status = 'processing',
    attempts = j.attempts + 1,
    try_number = j.try_number + 1,
    started_at = statement_timestamp(),
    worker_id = %(worker_id)s,
    lease_expires_at = statement_timestamp() + %(lease)s,
    updated = statement_timestamp(),
    cancel_requested = false,
    lease_token = replace(gen_random_uuid()::text, '-', '')
FROM chosen, commit_mode
WHERE j.id = chosen.id
RETURNING {j_job_columns}
"""

# The fencing token is drawn by the database (gen_random_uuid: pg_strong_random, 122 random bits) for each claimed
# row, so it never repeats for a job even when a crash loses the commit of the claim that drew the previous one.
CLAIM = "WITH RECURSIVE" + _CLAIM_CTES.replace("{arms}", _ARMS_SERVED) + _CLAIM_UPDATE
CLAIM_ANY_TASK = "WITH RECURSIVE" + _CLAIM_CTES.replace("{arms}", _ARMS_ANY_TASK) + _CLAIM_UPDATE

# Hand-off (PostgresStore.enqueue with an idle worker of this process): the claim for that worker, sent in the
# enqueue's own transaction right after its INSERT, so it sees the new rows. The INSERT's trigger was silenced
# (HANDOFF_SETUP); this statement notifies instead, unless no other worker could find anything: when the idle worker
# serves every (namespace, queue) the enqueue stored jobs in (`covered`) and took fewer jobs than its limit, what it
# left behind nobody can claim now (lanes, pauses, caps, not yet due). Returns one row when nothing was claimed
# (job columns NULL), else one per claimed job; the first column says whether a NOTIFY went out.
_HANDOFF_CLAIM = (
    "WITH RECURSIVE"
    + _CLAIM_CTES
    + """,
claimed AS ("""
    + _CLAIM_UPDATE
    + """),
woke AS MATERIALIZED (
    SELECT pg_notify({channel}, '')
    FROM (SELECT 1) AS one
    WHERE NOT %(covered)s OR (SELECT count(*) FROM claimed) >= %(limit)s
)
SELECT (SELECT count(*) FROM woke) > 0 AS woke, claimed.*
FROM (SELECT 1) AS one
LEFT JOIN claimed ON true
"""
)
HANDOFF_CLAIM = _HANDOFF_CLAIM.replace("{arms}", _ARMS_SERVED)
HANDOFF_CLAIM_ANY_TASK = _HANDOFF_CLAIM.replace("{arms}", _ARMS_ANY_TASK)

# Sent first in a hand-off's transaction; each setting lasts until that transaction ends:
# * no NOTIFY from the INSERT trigger (see CREATE_NOTIFY_TRIGGER): HANDOFF_CLAIM decides whether one is needed;
# * a generic plan, without JIT, for HANDOFF_CLAIM once psycopg has prepared it. Left to choose, PostgreSQL keeps
#   planning the claim afresh on every call (its custom plans look cheaper), and planning is about 0.5 ms of the
#   claim's 1 ms here; the generic plan runs as fast as the custom one or faster, also with a million finished rows
#   or long backlogs (measured: docs/postgres.md, "Hand-off"). JIT goes off with it: with a backlog the generic
#   plan's estimates cross jit_above_cost, and compiling it cost 55 ms on every call (the plan runs in 6 ms).
HANDOFF_SETUP = """
SELECT set_config('conveyor.notify', 'off', true),
       set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('jit', 'off', true)
"""

BEGIN_HANDOFF = "BEGIN;" + HANDOFF_SETUP

COMMIT = "COMMIT"

JIT_OFF = "SELECT set_config('jit', 'off', true)"

NOTIFY_JOBS = "SELECT pg_notify({channel}, '')"

# GS2 Run: the head of one user's lane, if due; `busy` tells the caller to answer 409 Conflict.
CLAIM_USER = """
WITH lane AS (
    SELECT EXISTS (SELECT 1 FROM {schema}.jobs
                   WHERE status = 'processing' AND namespace = %(namespace)s AND serial_key = %(lane)s) AS busy
),
head AS (
    SELECT j.id
    FROM {schema}.jobs j
    WHERE j.status = 'pending' AND j.namespace = %(namespace)s AND j.serial_key = %(lane)s
      AND NOT (SELECT busy FROM lane)
    ORDER BY j.priority, j.id
    LIMIT 1
    FOR UPDATE OF j
),
claimed AS (
    UPDATE {schema}.jobs j
    SET status = 'processing',
        attempts = j.attempts + 1,
        try_number = j.try_number + 1,
        started_at = statement_timestamp(),
        worker_id = %(worker_id)s,
        lease_expires_at = statement_timestamp() + %(lease)s,
        updated = statement_timestamp(),
        cancel_requested = false,
        lease_token = replace(gen_random_uuid()::text, '-', '')
    FROM head
    WHERE j.id = head.id AND j.run_at <= statement_timestamp()
    RETURNING {j_job_columns}
)
SELECT (SELECT busy FROM lane) AS busy, claimed.*
FROM (SELECT 1) AS one
LEFT JOIN claimed ON true
"""

LANE_BUSY = """
SELECT EXISTS (SELECT 1 FROM {schema}.jobs
               WHERE status = 'processing' AND namespace = %(namespace)s AND serial_key = %(lane)s)
"""

HAS_PENDING_JOB = """
SELECT EXISTS (SELECT 1 FROM {schema}.jobs
               WHERE status = 'pending' AND namespace = %(namespace)s AND serial_key = %(lane)s)
"""

# ---- the next due time ------------------------------------------------------------------------------------------

# Seconds (by the database's clock) until the earliest run_at among the pending jobs CLAIM could take once due, with
# CLAIM's own filters (its arms: served tasks; auto_run; scope, pauses, full caps, lane heads of idle lanes).
# jobs_ready is ordered by priority before run_at, so `min(run_at)` over an arm would read its whole backlog; instead
# `prio` walks each arm's distinct priorities with one index seek each (a loose index scan) and `first` takes each
# priority's earliest claimable run_at with another: a handful of seeks however long the backlog.
_NEXT_DUE = """
WITH RECURSIVE
{arms}prio AS (
    SELECT a.queue, a.task,
           (SELECT min(j.priority) FROM {schema}.jobs j
            WHERE j.status = 'pending' AND j.queue = a.queue AND j.task = a.task) AS p
    FROM arms a
    UNION ALL
    SELECT prio.queue, prio.task,
           (SELECT min(j.priority) FROM {schema}.jobs j
            WHERE j.status = 'pending' AND j.queue = prio.queue AND j.task = prio.task AND j.priority > prio.p)
    FROM prio
    WHERE prio.p IS NOT NULL
),
blocked AS MATERIALIZED (
    SELECT s.namespace, s.queue
    FROM {schema}.queue_settings s
    WHERE s.queue = ANY(%(queues)s::text[])
      AND (s.paused OR (s.concurrency IS NOT NULL
                        AND s.concurrency <= {schema}.running_jobs(s.namespace, s.queue)))
),
rate_wait AS MATERIALIZED (
    SELECT s.namespace, s.queue,
           greatest(coalesce(s.rate_tat, 0), t.now_us) - s.rate_tolerance - t.now_us AS wait_us
    FROM {schema}.queue_settings s,
         (SELECT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS now_us) t
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.rate_interval IS NOT NULL AND s.rate_key IS NULL
),
key_dry AS MATERIALIZED (
    SELECT s.namespace, s.queue, s.rate_key AS kind, k.key, k.tat - s.rate_tolerance - t.now_us AS wait_us
    FROM {schema}.queue_settings s
    CROSS JOIN (SELECT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS now_us) t
    CROSS JOIN LATERAL {schema}.rate_keys_held(s.namespace, s.queue, t.now_us) k
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.rate_interval IS NOT NULL AND s.rate_key IS NOT NULL
      AND NOT s.paused AND k.tat - s.rate_tolerance > t.now_us
      AND (%(namespaces)s::text[] IS NULL OR s.namespace = ANY(%(namespaces)s::text[]))
      AND s.namespace <> ALL(%(exclude)s::text[])
),
key_full AS MATERIALIZED (
    SELECT s.namespace, s.queue, k.key
    FROM {schema}.queue_settings s CROSS JOIN LATERAL {schema}.running_keys(s.namespace, s.queue) k
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.key_concurrency IS NOT NULL AND k.n >= s.key_concurrency
),
key_zero AS MATERIALIZED (
    SELECT s.namespace, s.queue FROM {schema}.queue_settings s
    WHERE s.queue = ANY(%(queues)s::text[]) AND s.key_concurrency = 0
),
rate_blocked AS MATERIALIZED (
    SELECT w.namespace, w.queue, statement_timestamp() + w.wait_us * interval '1 microsecond' AS at
    FROM rate_wait w
    WHERE w.wait_us > 0
      AND NOT EXISTS (SELECT 1 FROM blocked x WHERE x.namespace = w.namespace AND x.queue = w.queue)
      AND (%(namespaces)s::text[] IS NULL OR w.namespace = ANY(%(namespaces)s::text[]))
      AND w.namespace <> ALL(%(exclude)s::text[])
      AND NOT EXISTS (SELECT 1 FROM off x WHERE x.name = w.namespace)
      AND EXISTS (SELECT 1 FROM arms a JOIN {schema}.jobs j ON j.queue = a.queue AND j.task = a.task
                  WHERE a.queue = w.queue AND j.status = 'pending' AND j.namespace = w.namespace)
)
SELECT extract(epoch FROM least(min(first.run_at), (SELECT min(b.at) FROM rate_blocked b),
                                (SELECT statement_timestamp() + min(d.wait_us) * interval '1 microsecond'
                                 FROM key_dry d
                                 WHERE NOT EXISTS (SELECT 1 FROM blocked x
                                                   WHERE x.namespace = d.namespace AND x.queue = d.queue)
                                   AND NOT EXISTS (SELECT 1 FROM off x WHERE x.name = d.namespace)
                                   AND EXISTS (SELECT 1 FROM arms a JOIN {schema}.jobs j
                                                 ON j.queue = a.queue AND j.task = a.task
                                               WHERE a.queue = d.queue AND j.status = 'pending'
                                                 AND j.namespace = d.namespace)))
                          - statement_timestamp())::float8
FROM prio
CROSS JOIN LATERAL (
    SELECT j.run_at
    FROM {schema}.jobs j
    WHERE j.status = 'pending' AND j.queue = prio.queue AND j.task = prio.task AND j.priority = prio.p
      AND (%(namespaces)s::text[] IS NULL OR j.namespace = ANY(%(namespaces)s::text[]))
      AND j.namespace <> ALL(%(exclude)s::text[])
      AND NOT EXISTS (SELECT 1 FROM off x WHERE x.name = j.namespace)
      AND NOT EXISTS (SELECT 1 FROM blocked x WHERE x.namespace = j.namespace AND x.queue = j.queue)
      AND NOT EXISTS (SELECT 1 FROM rate_blocked x WHERE x.namespace = j.namespace AND x.queue = j.queue)
      AND NOT EXISTS (SELECT 1 FROM key_dry x
                      WHERE x.namespace = j.namespace AND x.queue = j.queue
                        AND x.key = {schema}.rate_key_of(x.kind, j.user_id, j.group_key, j.concurrency_key,
                                                         j.payload))
      AND (j.concurrency_key IS NULL OR (
               NOT EXISTS (SELECT 1 FROM key_full x WHERE x.namespace = j.namespace AND x.queue = j.queue
                                                      AND x.key = j.concurrency_key)
           AND NOT EXISTS (SELECT 1 FROM key_zero x WHERE x.namespace = j.namespace AND x.queue = j.queue)))
      AND (j.serial_key IS NULL OR (
               NOT EXISTS (SELECT 1 FROM {schema}.jobs h
                           WHERE h.status = 'pending' AND h.namespace = j.namespace
                             AND h.serial_key = j.serial_key AND (h.priority, h.id) < (j.priority, j.id))
           AND NOT EXISTS (SELECT 1 FROM {schema}.jobs r
                           WHERE r.status = 'processing' AND r.namespace = j.namespace
                             AND r.serial_key = j.serial_key)))
    ORDER BY j.run_at
    LIMIT 1
) first
WHERE prio.p IS NOT NULL
"""
NEXT_DUE = _NEXT_DUE.replace("{arms}", _ARMS_SERVED)
NEXT_DUE_ANY_TASK = _NEXT_DUE.replace("{arms}", _ARMS_ANY_TASK)

# ---- leases -----------------------------------------------------------------------------------------------------

# A try passed its timeout while its thread runs on (Store.mark_timed_out); fenced like HEARTBEAT, and a HOT
# update too (no indexed column).
MARK_TIMED_OUT = """
UPDATE {schema}.jobs
SET timed_out_at = statement_timestamp(), updated = statement_timestamp()
WHERE id = %(id)s AND lease_token = %(token)s AND status = 'processing'
"""

# Touches no indexed column, so every extension is a HOT update.
HEARTBEAT = """
WITH commit_mode AS MATERIALIZED (
    -- 'off' lets the worker's own state changes commit without waiting for the WAL flush (docs/postgres.md)
    SELECT set_config('synchronous_commit', %(synchronous_commit)s, true) AS value
)
UPDATE {schema}.jobs j
SET lease_expires_at = statement_timestamp() + %(lease)s,
    updated = statement_timestamp()
FROM json_to_recordset(%(batch)s::json) AS l(id text, token text), commit_mode
WHERE j.id = l.id AND j.lease_token = l.token AND j.status = 'processing'
RETURNING j.id, j.lease_token, j.cancel_requested
"""

# Every end-of-try report of a batch in one statement: job updates fenced on the lease token, then the attempt
# records (under their token) of the reports that applied. The batch is one JSON array of records (`a_*` fields:
# the attempt, absent when none). Returns the (1-based) positions of the reports that applied.
FINISH = """
WITH commit_mode AS MATERIALIZED (
    -- 'off' lets the worker's own state changes commit without waiting for the WAL flush (docs/postgres.md)
    SELECT set_config('synchronous_commit', %(synchronous_commit)s, true) AS value
),
f AS (
    SELECT *
    FROM json_to_recordset(%(batch)s::json)
         AS f(ord integer, id text, token text, status text, run_at timestamptz, error text, result json,
              release boolean, snooze boolean, a_try_number integer, a_outcome text, a_status_code integer,
              a_started timestamptz, a_finished timestamptz, a_worker_id text, a_result json, a_error text,
              a_traceback text)
),
applied AS (
    UPDATE {schema}.jobs j
    SET status = f.status,
        updated = statement_timestamp(),
        lease_expires_at = NULL,
        worker_id = NULL,
        lease_token = NULL,
        attempts = CASE WHEN f.release OR f.snooze THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        try_number = CASE WHEN f.release THEN greatest(j.try_number - 1, 0) ELSE j.try_number END,
        run_at = CASE WHEN f.release THEN coalesce(f.run_at, j.run_at)
                      WHEN f.status = 'pending' THEN coalesce(f.run_at, statement_timestamp())
                      ELSE j.run_at END,
        last_error = CASE WHEN f.release OR f.snooze THEN coalesce(f.error, j.last_error)
                          WHEN f.status = 'completed' THEN NULL
                          ELSE f.error END,
        result = CASE WHEN NOT f.release AND f.status = 'completed' THEN f.result ELSE j.result END,
        cancel_requested = CASE WHEN NOT f.release AND f.status = 'pending' THEN false ELSE j.cancel_requested END,
        finished_at = CASE WHEN f.status IN ('completed', 'failed', 'cancelled') THEN statement_timestamp() END
    FROM f, commit_mode
    WHERE j.id = f.id AND j.lease_token = f.token AND j.status = 'processing'
    RETURNING f.ord
),
recorded AS (
    INSERT INTO {schema}.attempts (job_id, lease_token, try_number, outcome, status_code, started_at, finished_at,
                                   worker_id, result, error, traceback)
    SELECT f.id, f.token, f.a_try_number, f.a_outcome, f.a_status_code, f.a_started, f.a_finished, f.a_worker_id,
           f.a_result, f.a_error, f.a_traceback
    FROM f
    JOIN applied USING (ord)
    WHERE f.a_outcome IS NOT NULL AND NOT f.release
    ON CONFLICT (job_id, lease_token) DO UPDATE
    SET try_number = excluded.try_number, outcome = excluded.outcome, status_code = excluded.status_code,
        started_at = excluded.started_at, finished_at = excluded.finished_at, worker_id = excluded.worker_id,
        result = excluded.result, error = excluded.error, traceback = excluded.traceback
)
SELECT ord FROM applied
"""

# The attempts of refused (stale) reports, kept as LOST records of their own claims (model.not_applied; the batch
# has FINISH's layout, with the attempts already turned LOST). Sent only when a report was refused, after FINISH:
# nothing for a job that no longer exists, and a claim's record that is not LOST (a repeated report of an applied
# try) is kept. Keeping this out of FINISH keeps every ordinary finish as cheap as before fencing tokens.
RECORD_STALE = """
WITH f AS (
    SELECT *
    FROM json_to_recordset(%(batch)s::json)
         AS f(ord integer, id text, token text, a_try_number integer, a_outcome text, a_status_code integer,
              a_started timestamptz, a_finished timestamptz, a_worker_id text, a_result json, a_error text,
              a_traceback text)
)
INSERT INTO {schema}.attempts AS a (job_id, lease_token, try_number, outcome, status_code, started_at, finished_at,
                                    worker_id, result, error, traceback)
SELECT DISTINCT ON (f.id, f.token)
       f.id, f.token, f.a_try_number, f.a_outcome, f.a_status_code, f.a_started, f.a_finished, f.a_worker_id,
       f.a_result, f.a_error, f.a_traceback
FROM f
WHERE EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = f.id)
ORDER BY f.id, f.token, f.ord
ON CONFLICT (job_id, lease_token) DO UPDATE
SET try_number = excluded.try_number, outcome = excluded.outcome, status_code = excluded.status_code,
    started_at = excluded.started_at, finished_at = excluded.finished_at, worker_id = excluded.worker_id,
    result = excluded.result, error = excluded.error, traceback = excluded.traceback
WHERE a.outcome = 'lost'
"""

# ---- maintenance ------------------------------------------------------------------------------------------------

# The earliest lease of a processing job (Store.next_lease_expiry), by the clock RESCUE compares with: a scan of the
# few processing rows through the partial index jobs_running.
NEXT_LEASE_EXPIRY = """
SELECT extract(epoch FROM min(j.lease_expires_at) - statement_timestamp())::float8
FROM {schema}.jobs j
WHERE j.status = 'processing'
"""

RESCUE = """
WITH clock AS (
    SELECT coalesce(%(now)s::timestamptz, statement_timestamp()) AS now
),
expired AS (
    SELECT j.id, j.worker_id, j.started_at, coalesce(j.lease_token, 'try-' || j.try_number) AS lease_token
    FROM {schema}.jobs j, clock
    WHERE j.status = 'processing' AND j.lease_expires_at <= clock.now
    ORDER BY j.lease_expires_at, j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
),
moved AS (
    -- run_at is kept: a rescued job goes back to its place in the claim order, not behind the backlog
    UPDATE {schema}.jobs j
    SET status = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE clock.now END,
        last_error = 'lease expired: worker ' || coalesce(e.worker_id, 'None') || ' stopped heartbeating',
        lease_expires_at = NULL,
        worker_id = NULL,
        lease_token = NULL,
        updated = clock.now
    FROM expired e, clock
    WHERE j.id = e.id
    RETURNING {j_job_columns}, e.worker_id AS lost_worker_id, coalesce(e.started_at, clock.now) AS lost_started_at,
              clock.now AS lost_at, e.lease_token AS lost_token
),
recorded AS (
    INSERT INTO {schema}.attempts (job_id, lease_token, try_number, outcome, status_code, started_at, finished_at,
                                   worker_id, error)
    SELECT m.id, m.lost_token, m.try_number, 'lost', 0, m.lost_started_at, m.lost_at, m.lost_worker_id, m.last_error
    FROM moved m
    ON CONFLICT (job_id, lease_token) DO UPDATE
    SET outcome = excluded.outcome, status_code = excluded.status_code, started_at = excluded.started_at,
        finished_at = excluded.finished_at, worker_id = excluded.worker_id, result = NULL,
        error = excluded.error, traceback = NULL
)
SELECT {job_columns} FROM moved
"""

PRUNE = """
WITH doomed AS (
    SELECT id
    FROM {schema}.jobs
    WHERE finished_at IS NOT NULL
      AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s::text)
      AND finished_at < greatest(%(completed_before)s::timestamptz, %(failed_before)s::timestamptz)
      AND ((status = 'completed' AND finished_at < %(completed_before)s::timestamptz)
           OR (status IN ('failed', 'cancelled') AND finished_at < %(failed_before)s::timestamptz))
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM {schema}.jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
),
history AS (
    DELETE FROM {schema}.attempts a USING gone g WHERE a.job_id = g.id
)
SELECT count(*) FROM gone
"""

# ---- inspection -------------------------------------------------------------------------------------------------

# Reads for callers (not the claim path) also return the payload's stored text last (Job.payload_json).
GET_JOB = "SELECT {job_columns}, payload::text FROM {schema}.jobs WHERE id = %(id)s"

JOB_STATUS = "SELECT status FROM {schema}.jobs WHERE id = %(id)s"

# ---- listing (Store.list_jobs): a WHERE of the filters given, a keyset seek, an order --------------------------

# Each filter's condition, joined with AND by `list_where` (only those the filter sets). `scheduled`/`retrying` are
# written `NOT (...)` when the filter asks for False.
LIST_FILTERS = {
    "namespace": "namespace = %(namespace)s",
    "queue": "queue = %(queue)s",
    "task": "task = %(task)s",
    "status": "status = %(status)s",
    "user_id": "user_id = %(user_id)s",
    "ids": "id = ANY(%(ids)s::text[])",
    "scheduled": "(status = 'pending' AND run_at > statement_timestamp() AND attempts = 0)",
    "retrying": "(status = 'pending' AND attempts > 0)",
    # a whole-id prefix is an index range; a suffix is a LIKE (the UI shows ids by their end)
    "id_fragment": "((id >= %(id_lo)s AND id < %(id_hi)s) OR id LIKE %(id_suffix)s)",
    "q": "payload::text ILIKE %(q)s",
    "path": "(payload::jsonb #> %(path)s::text[]) = ANY(%(path_values)s::jsonb[])",
    "queue_contains": "queue ILIKE %(queue_contains)s",
    "task_contains": "task ILIKE %(task_contains)s",
}

# The keyset seek, by the sort's direction: a row comparison on (column, id) that the (created, id) and
# (namespace, user_id, created, id) indexes answer as a range. finished_at lists unfinished jobs last (NULLS LAST),
# so a key of a finished job also lets every unfinished one through, and a key of an unfinished one only those.
KEYSET_AFTER = {
    False: "({col}, id) > (%(after_value)s, %(after_id)s)",
    True: "({col}, id) < (%(after_value)s, %(after_id)s)",
}
KEYSET_AFTER_NULLABLE = {
    False: "(({col}, id) > (%(after_value)s, %(after_id)s) OR {col} IS NULL)",
    True: "(({col}, id) < (%(after_value)s, %(after_id)s) OR {col} IS NULL)",
}
KEYSET_AFTER_NULL = {False: "({col} IS NULL AND id > %(after_id)s)", True: "({col} IS NULL AND id < %(after_id)s)"}
# NULLS LAST only where a column can be NULL (finished_at): on the others it would keep the planner from walking
# the (created, id) index backwards, and every page would sort the whole match.
ORDER = {False: "{col} ASC, id ASC", True: "{col} DESC, id DESC"}
ORDER_NULLABLE = {False: "{col} ASC NULLS LAST, id ASC", True: "{col} DESC NULLS LAST, id DESC"}

LIST_JOBS = (
    "SELECT {job_columns}, payload::text FROM {schema}.jobs {where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
)

COUNT_JOBS = "SELECT count(*) FROM {schema}.jobs {where}"


def list_where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


# ---- restore (Store.restore_jobs): jobs and attempts put back as they were, one transaction -----------------------

RESTORE_TAKEN = "SELECT id FROM {schema}.jobs WHERE id = ANY(%(ids)s::text[]) ORDER BY id"

RESTORE_UNIQUE_HOLDER = """
SELECT id FROM {schema}.jobs
WHERE namespace = %s AND unique_key = %s AND status IN ('pending', 'processing')
"""

# every stored field in codec order (json kinds as their text), then the serial key the lanes read
RESTORE_JOB = (
    "INSERT INTO {schema}.jobs ({job_columns}, serial_key) VALUES ("
    + ", ".join("%s::json" if f.kind == "json" else "%s" for f in STORED_JOB_FIELDS)
    + ", %s)"
)

RESTORE_ATTEMPT = (
    f"INSERT INTO {{schema}}.attempts ({ATTEMPT_COLUMNS}) VALUES ("
    + ", ".join("%s::json" if f.kind == "json" else "%s" for f in STORED_ATTEMPT_FIELDS)
    + ")"
)


# model.attempt_order: by try number, lost records of a number first.
ATTEMPTS = (
    f"SELECT {ATTEMPT_COLUMNS} FROM {{schema}}.attempts WHERE job_id = %(id)s "
    "ORDER BY try_number, outcome <> 'lost', started_at, lease_token"
)

STATS = """
SELECT status, count(*), count(*) FILTER (WHERE status = 'pending' AND run_at > statement_timestamp())
FROM {schema}.jobs
WHERE (%(namespace)s::text IS NULL OR namespace = %(namespace)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
GROUP BY status
"""

# ---- management -------------------------------------------------------------------------------------------------

CANCEL = """
UPDATE {schema}.jobs
SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
    finished_at = CASE WHEN status = 'pending' THEN statement_timestamp() ELSE finished_at END,
    cancel_requested = CASE WHEN status = 'processing' THEN true ELSE cancel_requested END,
    updated = statement_timestamp()
WHERE id = %(id)s AND status IN ('pending', 'processing')
RETURNING {job_columns}
"""

REQUEUE = """
UPDATE {schema}.jobs
SET status = 'pending',
    attempts = 0,
    run_at = statement_timestamp(),
    last_error = NULL,
    finished_at = NULL,
    cancel_requested = false,
    updated = statement_timestamp(),
    unique_hash = NULL,
    unique_states = NULL
WHERE id = %(id)s AND status IN ('failed', 'cancelled')
RETURNING {job_columns}
"""

ACTIVE_UNIQUE_HOLDER = """
SELECT j.id
FROM {schema}.jobs j
JOIN {schema}.jobs me ON me.id = %(id)s
WHERE j.namespace = me.namespace AND j.unique_key = me.unique_key AND j.status IN ('pending', 'processing')
LIMIT 1
"""

DELETE = """
WITH gone AS (
    DELETE FROM {schema}.jobs
    WHERE id = %(id)s AND (%(force)s OR status IN ('pending', 'failed'))
    RETURNING {job_columns}
),
history AS (
    DELETE FROM {schema}.attempts a USING gone g WHERE a.job_id = g.id
)
SELECT * FROM gone
"""

# One statement, so one transaction: the user's attempts and jobs go together (GS2 CleanUserDataByUserId).
DELETE_USER_DATA = """
WITH gone AS (
    DELETE FROM {schema}.jobs WHERE user_id = %(user_id)s RETURNING id
),
history AS (
    DELETE FROM {schema}.attempts a USING gone g WHERE a.job_id = g.id
)
SELECT count(*) FROM gone
"""

# A job already due keeps its run_at (its place in the order).
RUN_NOW = """
UPDATE {schema}.jobs
SET run_at = least(run_at, statement_timestamp()), updated = statement_timestamp()
WHERE id = %(id)s AND status = 'pending'
RETURNING {job_columns}
"""

# ---- namespaces, queues, workers --------------------------------------------------------------------------------

# Create stores the document as given; replace keeps `created`, stamps `updated` and bumps `revision`.
PUT_NAMESPACE = """
INSERT INTO {schema}.namespaces AS n (name, doc) VALUES (%(name)s, %(doc)s)
ON CONFLICT (name) DO UPDATE
SET doc = excluded.doc || jsonb_build_object('created', n.doc -> 'created',
                                             'updated', to_jsonb(statement_timestamp()),
                                             'revision', coalesce((n.doc ->> 'revision')::integer, 0) + 1)
RETURNING doc
"""

# Create only if absent (the primary key decides, atomically); nothing is returned when the name is taken.
CREATE_NAMESPACE = """
INSERT INTO {schema}.namespaces (name, doc) VALUES (%(name)s, %(doc)s)
ON CONFLICT (name) DO NOTHING
RETURNING doc
"""

# Compare-and-set on the document's revision: replace only while it is still %(expected)s. Nothing is returned
# when the namespace is missing or moved on (the caller reads it to say which).
UPDATE_NAMESPACE_IF_REVISION = """
UPDATE {schema}.namespaces AS n
SET doc = %(doc)s || jsonb_build_object('created', n.doc -> 'created',
                                        'updated', to_jsonb(statement_timestamp()),
                                        'revision', %(expected)s::integer + 1)
WHERE name = %(name)s AND coalesce((n.doc ->> 'revision')::integer, 0) = %(expected)s::integer
RETURNING doc
"""

# `default` exists with revision 0 before anything was stored: when UPDATE_NAMESPACE_IF_REVISION found no row and
# revision 0 was expected, the first write inserts it (as revision 1); a concurrent first write wins the key instead.
INSERT_DEFAULT_FIRST = """
INSERT INTO {schema}.namespaces (name, doc)
VALUES (%(name)s, %(doc)s || jsonb_build_object('updated', to_jsonb(statement_timestamp()), 'revision', 1))
ON CONFLICT (name) DO NOTHING
RETURNING doc
"""

GET_NAMESPACE = "SELECT doc FROM {schema}.namespaces WHERE name = %(name)s"

LIST_NAMESPACES = "SELECT doc FROM {schema}.namespaces ORDER BY name"

# Deleting a namespace takes its jobs, their attempts and its queue settings with it, in one statement (GS2).
# Returns how many records went (the namespace's row plus its jobs).
DELETE_NAMESPACE = """
WITH gone_jobs AS (
    DELETE FROM {schema}.jobs WHERE namespace = %(name)s RETURNING id
),
gone_attempts AS (
    DELETE FROM {schema}.attempts a USING gone_jobs g WHERE a.job_id = g.id
),
gone_settings AS (
    DELETE FROM {schema}.queue_settings WHERE namespace = %(name)s
),
gone_rate_keys AS (
    DELETE FROM {schema}.rate_keys WHERE namespace = %(name)s
),
gone AS (
    DELETE FROM {schema}.namespaces WHERE name = %(name)s RETURNING name
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM gone_jobs)
"""

# Every setting at once; the rate limiter's state (rate_tat) is kept. rate_interval / rate_tolerance are the limit's
# GCRA constants in µs (model.RateLimit computes them, so every store applies one formula).
PUT_QUEUE_SETTINGS = """
INSERT INTO {schema}.queue_settings (namespace, queue, paused, concurrency, rate_limit, rate_period, rate_burst,
                                     rate_interval, rate_tolerance, key_concurrency, rate_key)
VALUES (%(namespace)s, %(queue)s, %(paused)s, %(concurrency)s, %(rate_limit)s, %(rate_period)s, %(rate_burst)s,
        %(rate_interval)s, %(rate_tolerance)s, %(key_concurrency)s, %(rate_key)s)
ON CONFLICT (namespace, queue) DO UPDATE
SET paused = excluded.paused, concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
    rate_period = excluded.rate_period, rate_burst = excluded.rate_burst, rate_interval = excluded.rate_interval,
    rate_tolerance = excluded.rate_tolerance, key_concurrency = excluded.key_concurrency, rate_key = excluded.rate_key
"""

# update_queue_settings: the row is created if missing, then locked (FOR UPDATE) and read in the caller's
# transaction, which writes the changed settings back with PUT_QUEUE_SETTINGS before it commits.
ENSURE_QUEUE_SETTINGS = """
INSERT INTO {schema}.queue_settings (namespace, queue) VALUES (%(namespace)s, %(queue)s)
ON CONFLICT (namespace, queue) DO NOTHING
"""
LOCK_QUEUE_SETTINGS = """
SELECT paused, concurrency, rate_limit, rate_period, rate_burst, key_concurrency, rate_key FROM {schema}.queue_settings
WHERE namespace = %(namespace)s AND queue = %(queue)s
FOR UPDATE
"""
GET_QUEUE_SETTINGS = """
SELECT paused, concurrency, rate_limit, rate_period, rate_burst, key_concurrency, rate_key FROM {schema}.queue_settings
WHERE namespace = %(namespace)s AND queue = %(queue)s
"""

# Counts per (namespace, queue, status) joined with every settings row, so queues with settings but no jobs show.
LIST_QUEUES = """
WITH counts AS (
    SELECT namespace, queue, status, count(*) AS n,
           count(*) FILTER (WHERE status = 'pending' AND run_at > statement_timestamp()) AS scheduled
    FROM {schema}.jobs
    WHERE %(namespace)s::text IS NULL OR namespace = %(namespace)s::text
    GROUP BY namespace, queue, status
),
settings AS (
    SELECT namespace, queue, paused, concurrency, rate_limit, rate_period, rate_burst, key_concurrency, rate_key
    FROM {schema}.queue_settings
    WHERE %(namespace)s::text IS NULL OR namespace = %(namespace)s::text
)
SELECT coalesce(c.namespace, s.namespace), coalesce(c.queue, s.queue), c.status, coalesce(c.n, 0),
       coalesce(c.scheduled, 0), coalesce(s.paused, false), s.concurrency, s.rate_limit, s.rate_period,
       s.rate_burst, s.key_concurrency, s.rate_key
FROM counts c
FULL JOIN settings s ON s.namespace = c.namespace AND s.queue = c.queue
"""

# Store.rate_state: the queue's own bucket, the keys holding state and the most limited of them.
RATE_STATE = """
SELECT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint,
       (SELECT rate_tat FROM {schema}.queue_settings WHERE namespace = %(namespace)s AND queue = %(queue)s),
       (SELECT count(*) FROM {schema}.rate_keys
        WHERE namespace = %(namespace)s AND queue = %(queue)s
          AND tat > (extract(epoch FROM statement_timestamp()) * 1000000)::bigint),
       (SELECT coalesce(json_agg(json_build_array(k.key, k.tat)), '[]'::json) FROM (
            SELECT key, tat FROM {schema}.rate_keys
            WHERE namespace = %(namespace)s AND queue = %(queue)s
              AND tat > (extract(epoch FROM statement_timestamp()) * 1000000)::bigint
            ORDER BY tat DESC, key LIMIT %(limit)s) k)
"""

REGISTER_WORKER = """
INSERT INTO {schema}.workers (id, hostname, pid, queues, concurrency, started_at, heartbeat_at, expires_at,
                              running, version, tasks)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(started_at)s, %(heartbeat_at)s,
        %(expires_at)s, %(running)s, %(version)s, %(tasks)s)
ON CONFLICT (id) DO UPDATE
SET hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
    expires_at = excluded.expires_at, running = excluded.running, version = excluded.version, tasks = excluded.tasks
"""

UNREGISTER_WORKER = "DELETE FROM {schema}.workers WHERE id = %(id)s"

# Expired registrations are removed on the way, so they never pile up.
LIST_WORKERS = """
WITH expired AS (
    DELETE FROM {schema}.workers WHERE expires_at <= statement_timestamp()
)
SELECT id, hostname, pid, queues, concurrency, started_at, heartbeat_at, expires_at, running, version, tasks
FROM {schema}.workers
WHERE expires_at > statement_timestamp()
ORDER BY started_at, id
"""

# ---- leader election --------------------------------------------------------------------------------------------

# Take or renew a role (Store.elect) in one statement: vacant, lapsed or ours → ours until now + ttl (the term grows
# unless it is a renewal of a live lease); someone else's live lease → unchanged, and the second SELECT reports it.
# A row lock serialises candidates. The clock is the database's (clock_timestamp: the moment the row is written,
# after any lock wait). It commits durably whatever `fast_worker_commits` says: a lost renewal could elect twice.
ELECT = """
WITH up AS (
    INSERT INTO {schema}.leaders AS l (name, holder, term, expires_at)
    VALUES (%(name)s, %(holder)s, 1, clock_timestamp() + %(ttl)s)
    ON CONFLICT (name) DO UPDATE
    SET term = CASE WHEN l.holder = excluded.holder AND l.expires_at > clock_timestamp() THEN l.term
                    ELSE l.term + 1 END,
        holder = excluded.holder,
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
    RETURNING l.holder, l.term, l.expires_at
)
SELECT holder, term, extract(epoch FROM expires_at - clock_timestamp())::float8, true FROM up
UNION ALL
SELECT holder, term, extract(epoch FROM expires_at - clock_timestamp())::float8, false
FROM {schema}.leaders
WHERE name = %(name)s AND NOT EXISTS (SELECT 1 FROM up)
"""

# The role as it stands (read after an ELECT that lost a race for a row that did not exist in its snapshot).
LEADER = """
SELECT holder, term, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM {schema}.leaders
WHERE name = %(name)s
"""

# A resignation lapses the lease; the row stays so that the next term counts on from it.
RESIGN = """
UPDATE {schema}.leaders SET expires_at = clock_timestamp()
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > clock_timestamp()
"""

LEADERS = """
SELECT name, holder, term, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM {schema}.leaders
WHERE expires_at > clock_timestamp()
ORDER BY name
"""

# ---- key-value --------------------------------------------------------------------------------------------------

KV_GET = """
SELECT value FROM {schema}.kv
WHERE key = %(key)s AND (expires_at IS NULL OR expires_at > statement_timestamp())
"""

KV_SET = """
INSERT INTO {schema}.kv AS kv (key, value, expires_at)
VALUES (%(key)s, %(value)s, statement_timestamp() + make_interval(secs => %(ttl)s::float8))
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
RETURNING true
"""

# Test-and-set: an existing live value wins (the upsert's WHERE fails and nothing is returned).
KV_SET_IF_ABSENT = """
INSERT INTO {schema}.kv AS kv (key, value, expires_at)
VALUES (%(key)s, %(value)s, statement_timestamp() + make_interval(secs => %(ttl)s::float8))
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= statement_timestamp()
RETURNING true
"""

# Put if no live value, and answer (value in place, whether this statement put it). The fallback SELECT sees the
# statement's snapshot: when another transaction wrote the key after it was taken, the upsert (which waits for that
# row) finds it live while the SELECT sees nothing or an expired version, so no row comes back and the caller runs
# the statement again.
KV_SETDEFAULT = """
WITH put AS (
    INSERT INTO {schema}.kv AS kv (key, value, expires_at)
    VALUES (%(key)s, %(value)s, statement_timestamp() + make_interval(secs => %(ttl)s::float8))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
    WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= statement_timestamp()
    RETURNING value
)
SELECT value, true FROM put
UNION ALL
SELECT value, false FROM {schema}.kv
WHERE key = %(key)s AND (expires_at IS NULL OR expires_at > statement_timestamp()) AND NOT EXISTS (SELECT 1 FROM put)
"""

KV_DELETE = "DELETE FROM {schema}.kv WHERE key = %(key)s"

# ---- cron schedules (runtime ones as documents; the runs of every schedule) ------------------------------------

SCHEDULE_INSERT = """
INSERT INTO {schema}.schedules (name, doc) VALUES (%(name)s, %(doc)s) ON CONFLICT (name) DO NOTHING RETURNING true
"""
SCHEDULE_UPDATE = "UPDATE {schema}.schedules SET doc = %(doc)s WHERE name = %(name)s RETURNING true"
SCHEDULE_GET = "SELECT doc FROM {schema}.schedules WHERE name = %(name)s"
SCHEDULE_LIST = "SELECT doc FROM {schema}.schedules ORDER BY name"
# A schedule goes with its run records.
SCHEDULE_DELETE = """
WITH runs AS (DELETE FROM {schema}.schedule_runs WHERE schedule = %(name)s)
DELETE FROM {schema}.schedules WHERE name = %(name)s RETURNING true
"""
# The first record of an occurrence stays.
SCHEDULE_RUN_INSERT = """
INSERT INTO {schema}.schedule_runs (schedule, occurrence, doc) VALUES (%(schedule)s, %(occurrence)s, %(doc)s)
ON CONFLICT (schedule, occurrence) DO NOTHING
RETURNING true
"""
# Keep the newest `keep` runs of a schedule (run after the insert, in its transaction, so it sees the new row; no
# row at that offset: fewer runs, nothing deleted).
SCHEDULE_RUNS_TRIM = """
DELETE FROM {schema}.schedule_runs
WHERE schedule = %(schedule)s AND occurrence < (
    SELECT occurrence FROM {schema}.schedule_runs WHERE schedule = %(schedule)s
    ORDER BY occurrence DESC OFFSET %(keep)s - 1 LIMIT 1
)
"""
SCHEDULE_RUNS = """
SELECT doc FROM {schema}.schedule_runs WHERE schedule = %(name)s ORDER BY occurrence DESC LIMIT %(limit)s
"""

# drop(): the whole schema goes, with every table, index, function and trigger Conveyor made in it.
DROP_SCHEMA = "DROP SCHEMA IF EXISTS {schema} CASCADE"

PING = "SELECT 1"

# ---- events across processes (store/base.py publish_events / subscribe_events; store/postgres/events.py) ----------
# One NOTIFY per message on the events channel (not the jobs' wake-up channel, whose listeners would wake for every
# event), in the order given. Inside a transaction (the caller's connection) PostgreSQL sends them at its commit,
# and never when it rolls back.
PUBLISH_EVENTS = """
SELECT pg_notify({events_channel}, m.message)
FROM unnest(%s::text[]) WITH ORDINALITY AS m(message, n)
ORDER BY m.n
"""
