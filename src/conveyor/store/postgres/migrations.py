"""Versioned schema migrations for the PostgreSQL store.

Each migration is a (version, name, SQL) triple applied once, in order, inside one transaction together with its
row in `{schema}.schema_migrations`. `{schema}` is replaced by the store's quoted schema name. Never edit a
migration that has shipped: add a new one. The runner (PostgresStore.migrate) holds a transaction-scoped advisory
lock while it checks and applies them, so several processes starting at once apply each migration exactly once.

Table layout, and why:

* `jobs` holds every job. Workers never scan it directly: the claim walks `jobs_ready`, a partial index over
  pending rows only, so a table holding millions of finished rows claims as fast as an empty one (see
  docs/postgres.md for the EXPLAIN). Finished rows live in `jobs_finished` (partial, for the pruner) only.
* `jobs_lane_pending` / `jobs_lane_running` serve the serial-lane rule; `jobs_lane_running` is UNIQUE, so the
  database itself guarantees at most one processing job per lane whatever races the claimers run into.
* `jobs_unique_active` is the unique-key rule: a partial unique index over active (pending/processing) rows, used
  as the ON CONFLICT arbiter of enqueue.
* `payload`/`result` are `json` (not `jsonb`): stored as sent, so key order and any string (even "\\u0000",
  which jsonb refuses) round-trip exactly, and inserts skip jsonb's parse-and-rebuild.
* Key and name columns use `COLLATE "C"`: byte-order comparisons are much cheaper in every index, and ordering
  by id matches Python's string order (the other stores' order).
* `lease_expires_at` is in no index, so heartbeats are HOT updates that touch no index at all.
* Migration 3: `lease_token` is the claim's fencing token (random, written by each claim); attempts are keyed by
  (job_id, lease_token), one record per claim; `jobs_ready` gains the task, so a claim reads one index range per
  (queue, task) it serves and never walks the jobs of tasks it does not; `namespaces.auto_run` (generated from the
  document) lets the claim skip namespaces whose auto_run is off; `workers.tasks` records what each worker serves.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "0001_initial",
        """
CREATE TABLE {schema}.jobs (
    id               text COLLATE "C" PRIMARY KEY,
    namespace        text COLLATE "C" NOT NULL,
    queue            text COLLATE "C" NOT NULL,
    task             text COLLATE "C" NOT NULL,
    payload          json,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    try_number       integer     NOT NULL DEFAULT 0,
    created          timestamptz NOT NULL,
    updated          timestamptz NOT NULL,
    user_id          text COLLATE "C",
    group_key        text COLLATE "C",
    unique_key       text COLLATE "C",
    serial_key       text COLLATE "C",
    started_at       timestamptz,
    finished_at      timestamptz,
    lease_expires_at timestamptz,
    worker_id        text,
    last_error       text,
    result           json,
    cancel_requested boolean     NOT NULL DEFAULT false
);

-- The claim walks this index in claim order, one queue at a time; it holds pending rows only.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, priority, run_at, id) WHERE status = 'pending';

-- Serial lanes: the head of a lane is its pending job with the lowest (priority, id) ...
CREATE INDEX jobs_lane_pending ON {schema}.jobs (namespace, serial_key, priority, id)
    WHERE status = 'pending' AND serial_key IS NOT NULL;
-- ... and a lane runs one job at a time: enforced by the database, not only by the claim's filter.
CREATE UNIQUE INDEX jobs_lane_running ON {schema}.jobs (namespace, serial_key)
    WHERE status = 'processing' AND serial_key IS NOT NULL;

-- Running jobs per queue (concurrency caps) and for the rescuer; small by nature.
CREATE INDEX jobs_running ON {schema}.jobs (namespace, queue) WHERE status = 'processing';

-- Unique keys among active jobs: the arbiter of INSERT ... ON CONFLICT in enqueue.
CREATE UNIQUE INDEX jobs_unique_active ON {schema}.jobs (namespace, unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing');

-- The pruner's way to finished jobs.
CREATE INDEX jobs_finished ON {schema}.jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE {schema}.attempts (
    job_id      text        COLLATE "C" NOT NULL,
    try_number  integer     NOT NULL,
    outcome     text        NOT NULL,
    status_code integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    worker_id   text,
    result      json,
    error       text,
    traceback   text,
    PRIMARY KEY (job_id, try_number)
);

CREATE TABLE {schema}.namespaces (
    name text  PRIMARY KEY,
    doc  jsonb NOT NULL
);

CREATE TABLE {schema}.queue_settings (
    namespace   text    NOT NULL,
    queue       text    NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    concurrency integer,
    PRIMARY KEY (namespace, queue)
);

CREATE TABLE {schema}.workers (
    id           text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    running      text[]      NOT NULL,
    version      text        NOT NULL
);

CREATE TABLE {schema}.kv (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    expires_at timestamptz
);
""",
    ),
    (
        2,
        "0002_leaders_and_timeouts",
        """
-- When a try passed its timeout while its thread kept running (Store.mark_timed_out). In no index, so marking it
-- stays a HOT update.
ALTER TABLE {schema}.jobs ADD COLUMN timed_out_at timestamptz;

-- Leader election (Store.elect): one row per role with its holder and lease; `term` grows on each change of hands.
-- Rows are never deleted (a resignation lapses the lease), so a term is never given twice.
CREATE TABLE {schema}.leaders (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    term       bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
""",
    ),
    (
        3,
        "0003_fencing_tokens_and_served_tasks",
        """
ALTER TABLE {schema}.jobs ADD COLUMN lease_token text;

-- The claim reads one range per (queue, task) that its worker serves, in claim order.
DROP INDEX {schema}.jobs_ready;
CREATE INDEX jobs_ready ON {schema}.jobs (queue, task, priority, run_at, id) WHERE status = 'pending';

-- One attempt record per claim. Records made before tokens existed get 'try-<n>'.
ALTER TABLE {schema}.attempts ADD COLUMN lease_token text;
UPDATE {schema}.attempts SET lease_token = 'try-' || try_number;
ALTER TABLE {schema}.attempts ALTER COLUMN lease_token SET NOT NULL;
ALTER TABLE {schema}.attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE {schema}.attempts ADD PRIMARY KEY (job_id, lease_token);

ALTER TABLE {schema}.namespaces
    ADD COLUMN auto_run boolean GENERATED ALWAYS AS (coalesce((doc ->> 'auto_run')::boolean, true)) STORED;
CREATE INDEX namespaces_auto_run_off ON {schema}.namespaces (name) WHERE NOT auto_run;

ALTER TABLE {schema}.workers ADD COLUMN tasks text[] NOT NULL DEFAULT '{}';
""",
    ),
    (
        4,
        "0004_keyset_lists",
        """
-- Keyset pages (Store.list_jobs with a key): newest or oldest first seeks (created, id) by index, so a deep page
-- costs what the first one does. Neither column ever changes, so updates stay HOT.
CREATE INDEX jobs_created ON {schema}.jobs (created, id);
-- A list by status (dead letters, the UI's status filter) in the same order, without sorting every job of it.
CREATE INDEX jobs_status_created ON {schema}.jobs (status, created, id);
-- A user's jobs (GS2 lists, the user API), in the same order.
CREATE INDEX jobs_user ON {schema}.jobs (namespace, user_id, created, id) WHERE user_id IS NOT NULL;
""",
    ),
    (
        5,
        "0005_queue_rate_limits",
        """
-- Flow control (issue 13): a queue's rate limit (N claims per period, a burst), its GCRA constants in µs
-- (interval between claims, how far ahead the arrival time may run) and its state, the theoretical arrival time in
-- µs since the epoch, which the claim reads and advances under the row's lock.
ALTER TABLE {schema}.queue_settings
    ADD COLUMN rate_limit integer,
    ADD COLUMN rate_period double precision,
    ADD COLUMN rate_burst integer,
    ADD COLUMN rate_interval bigint,
    ADD COLUMN rate_tolerance bigint,
    ADD COLUMN rate_tat bigint;
""",
    ),
    (
        6,
        "0006_concurrency_keys",
        """
-- Concurrency per key (issue 13): a job's concurrency key and its queue's limit of processing jobs per key. The
-- claim counts a keyed queue's processing jobs per key (running_keys) through jobs_processing-like scans of the few
-- processing rows; no index is needed for the key itself.
ALTER TABLE {schema}.jobs ADD COLUMN concurrency_key text;
ALTER TABLE {schema}.queue_settings ADD COLUMN key_concurrency integer;
""",
    ),
    (
        7,
        "0007_unique_periods",
        """
-- Unique jobs with a period and states (issue 13): a job's unique hash (what it is unique by, with its period's
-- bucket) and the statuses in which it keeps others of that hash out (bits of model.UNIQUE_STATE_BITS). The unique
-- index holds only rows whose status is among their own states, so it is the ON CONFLICT arbiter of an enqueue
-- with `unique=`: the check and the insert are one atomic step under any number of concurrent enqueues.
ALTER TABLE {schema}.jobs ADD COLUMN unique_hash text COLLATE "C", ADD COLUMN unique_states smallint;
CREATE UNIQUE INDEX jobs_unique_hash ON {schema}.jobs (namespace, unique_hash)
    WHERE unique_hash IS NOT NULL AND (unique_states & CASE status WHEN 'pending' THEN 1 WHEN 'processing' THEN 2
        WHEN 'completed' THEN 4 WHEN 'failed' THEN 8 ELSE 16 END) <> 0;
""",
    ),
    (
        8,
        "0008_cron_schedules",
        """
-- Cron (issue 13 item 5): schedules made at runtime, one JSON document per name (ScheduleRecord.to_doc, kept as
-- text: read and written whole), and the run records of every schedule, keyed by (schedule, occurrence µs since
-- the epoch): an occurrence is recorded once.
CREATE TABLE {schema}.schedules (
    name text PRIMARY KEY,
    doc  text NOT NULL
);
CREATE TABLE {schema}.schedule_runs (
    schedule   text NOT NULL,
    occurrence bigint NOT NULL,
    doc        text NOT NULL,
    PRIMARY KEY (schedule, occurrence)
);
""",
    ),
    (
        9,
        "0009_rate_keys",
        """
-- Rate limits per key (issue 13): a queue's rate_key partitions its rate limit; each key's GCRA state (the
-- theoretical arrival time, µs) is a row, kept only while that key's bucket is not full again: the claim deletes the
-- rows whose time has passed through rate_keys_tat, so the table holds at most the keys claimed within one burst.
ALTER TABLE {schema}.queue_settings ADD COLUMN rate_key text;
CREATE TABLE {schema}.rate_keys (
    namespace text NOT NULL,
    queue     text NOT NULL,
    key       text NOT NULL,
    tat       bigint NOT NULL,
    PRIMARY KEY (namespace, queue, key)
);
CREATE INDEX rate_keys_tat ON {schema}.rate_keys (namespace, queue, tat);
""",
    ),
)
