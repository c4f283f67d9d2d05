"""Versioned schema migrations for the SQLite store.

Each step has a number and a name and is a list of DDL statements; `conveyor_schema_migrations` records which
steps ran. `apply_migrations` runs every missing step inside one `BEGIN IMMEDIATE` transaction, so several
processes starting at once on one file serialise on SQLite's write lock and each step runs exactly once (the
second process sees the first one's rows and applies nothing).

Schema notes (why it looks like this):

* Every table is prefixed `conveyor_` because the database file may be the application's own (transactional
  enqueue through the caller's `sqlite3` connection), where `jobs` could already exist.
* Times are INTEGER microseconds since the Unix epoch: comparisons in the claim path are plain integer compares,
  a datetime survives the round trip exactly, and they stay exact inside the JSON the hot paths return (SQLite
  prints REALs in JSON with 15 significant digits, which would lose microseconds).
* `serial_key` is a generated column (group key, else user id) so every writer, including a caller's own
  connection, gets it right without Python's help.
* `lease_token` is the claim's fencing token (random, written by each claim); attempts are keyed by
  (job_id, lease_token), one record per claim (migration 3).
* The claim index is per (namespace, queue, task), planned from `conveyor_queue_tasks`, so a claim reads only the
  ranges of the tasks its worker serves (migration 3).
* `eligible` makes serial lanes O(1) to claim: a job may be claimed only when eligible = 1. Jobs outside lanes are
  always eligible; inside a lane exactly the head (the pending job with the lowest (priority, id)) is eligible, and
  only while no job of the lane is processing. Triggers keep it true on every insert, status change and delete, so
  the claim query is a plain ordered range scan of one partial index however long a blocked lane grows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import SchemaTooNew


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


# The lane head of (namespace, serial_key) named by the trigger row `{row}` (NEW or OLD): the pending job with the
# lowest (priority, id), or NULL while a job of the lane is processing. Evaluated once per statement.
_LANE_HEAD = """(
        SELECT h.id FROM conveyor_jobs AS h
        WHERE h.namespace = {row}.namespace AND h.serial_key = {row}.serial_key AND h.status = 'pending'
          AND NOT EXISTS (
              SELECT 1 FROM conveyor_jobs AS p
              WHERE p.namespace = {row}.namespace AND p.serial_key = {row}.serial_key AND p.status = 'processing'
          )
        ORDER BY h.priority, h.id
        LIMIT 1
    )"""

_RECOMPUTE_LANE = """
    UPDATE conveyor_jobs SET eligible = 0
    WHERE namespace = {row}.namespace AND serial_key = {row}.serial_key AND serial_key IS NOT NULL
      AND eligible = 1 AND id IS NOT {head};
    UPDATE conveyor_jobs SET eligible = 1
    WHERE id = {head} AND eligible = 0;
"""


def _recompute(row: str) -> str:
    head = _LANE_HEAD.format(row=row)
    return _RECOMPUTE_LANE.format(row=row, head=head)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial",
        (
            """
            CREATE TABLE conveyor_jobs (
                id               TEXT PRIMARY KEY,
                namespace        TEXT NOT NULL,
                queue            TEXT NOT NULL,
                task             TEXT NOT NULL,
                payload          TEXT NOT NULL,
                status           TEXT NOT NULL
                                 CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
                priority         INTEGER NOT NULL,
                run_at           INTEGER NOT NULL,
                attempts         INTEGER NOT NULL DEFAULT 0,
                max_attempts     INTEGER NOT NULL,
                try_number       INTEGER NOT NULL DEFAULT 0,
                created          INTEGER NOT NULL,
                updated          INTEGER NOT NULL,
                user_id          TEXT,
                group_key        TEXT,
                unique_key       TEXT,
                started_at       INTEGER,
                finished_at      INTEGER,
                lease_expires_at INTEGER,
                worker_id        TEXT,
                last_error       TEXT,
                result           TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                eligible         INTEGER NOT NULL DEFAULT 1,
                serial_key       TEXT GENERATED ALWAYS AS (
                                     CASE WHEN group_key IS NOT NULL THEN 'g:' || group_key
                                          WHEN user_id IS NOT NULL THEN 'u:' || user_id END
                                 ) STORED
            )
            """,
            # The claim path: due, eligible, pending jobs of one (namespace, queue) in claim order.
            """
            CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (namespace, queue, priority, run_at, id)
            WHERE status = 'pending' AND eligible = 1
            """,
            # Lanes: head lookup (status 'pending' by priority, id) and the busy check (status 'processing').
            """
            CREATE INDEX conveyor_jobs_lane ON conveyor_jobs (namespace, serial_key, status, priority, id)
            WHERE serial_key IS NOT NULL
            """,
            # The eligible job(s) of a lane, so the trigger clears the old head without walking the lane.
            """
            CREATE INDEX conveyor_jobs_lane_head ON conveyor_jobs (namespace, serial_key)
            WHERE serial_key IS NOT NULL AND eligible = 1
            """,
            # Unique keys among active jobs (checked inside the enqueue transaction).
            """
            CREATE INDEX conveyor_jobs_unique ON conveyor_jobs (namespace, unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('pending', 'processing')
            """,
            # Queue concurrency caps (processing per queue) and rescue. Processing jobs are few (at most the
            # workers' slots), so rescue scans them all rather than keep a lease index that every claim, finish
            # and heartbeat would have to update.
            """
            CREATE INDEX conveyor_jobs_processing ON conveyor_jobs (namespace, queue)
            WHERE status = 'processing'
            """,
            # Prune, and listing / stats by status.
            """
            CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (status, finished_at)
            WHERE finished_at IS NOT NULL
            """,
            "CREATE INDEX conveyor_jobs_created ON conveyor_jobs (created, id)",
            "CREATE INDEX conveyor_jobs_status ON conveyor_jobs (status, namespace, queue, created)",
            """
            CREATE INDEX conveyor_jobs_user ON conveyor_jobs (namespace, user_id, created)
            WHERE user_id IS NOT NULL
            """,
            f"""
            CREATE TRIGGER conveyor_jobs_lane_insert AFTER INSERT ON conveyor_jobs
            WHEN NEW.serial_key IS NOT NULL
            BEGIN {_recompute("NEW")} END
            """,
            f"""
            CREATE TRIGGER conveyor_jobs_lane_status AFTER UPDATE OF status ON conveyor_jobs
            WHEN NEW.serial_key IS NOT NULL AND NEW.status IS NOT OLD.status
            BEGIN {_recompute("NEW")} END
            """,
            f"""
            CREATE TRIGGER conveyor_jobs_lane_delete AFTER DELETE ON conveyor_jobs
            WHEN OLD.serial_key IS NOT NULL AND OLD.status IN ('pending', 'processing')
            BEGIN {_recompute("OLD")} END
            """,
            """
            CREATE TABLE conveyor_attempts (
                job_id      TEXT NOT NULL,
                try_number  INTEGER NOT NULL,
                outcome     TEXT NOT NULL,
                status_code INTEGER NOT NULL,
                started_at  INTEGER NOT NULL,
                finished_at INTEGER NOT NULL,
                worker_id   TEXT,
                result      TEXT,
                error       TEXT,
                traceback   TEXT,
                PRIMARY KEY (job_id, try_number)
            )
            """,
            # Every (namespace, queue) that ever had a job, plus its settings. The claim reads it to plan one
            # index range per queue (skipping paused ones); `configured` marks rows written by put_queue_settings.
            """
            CREATE TABLE conveyor_queues (
                namespace   TEXT NOT NULL,
                name        TEXT NOT NULL,
                paused      INTEGER NOT NULL DEFAULT 0,
                concurrency INTEGER,
                configured  INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (namespace, name)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX conveyor_queues_name ON conveyor_queues (name)",
            """
            CREATE TABLE conveyor_namespaces (
                name TEXT PRIMARY KEY,
                doc  TEXT NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE conveyor_workers (
                id         TEXT PRIMARY KEY,
                doc        TEXT NOT NULL,
                started_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE conveyor_kv (
                key        TEXT PRIMARY KEY,
                value      TEXT NOT NULL,
                expires_at INTEGER
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        2,
        "leaders_and_timeouts",
        (
            # When a try passed its timeout while its thread kept running (Store.mark_timed_out).
            "ALTER TABLE conveyor_jobs ADD COLUMN timed_out_at INTEGER",
            # Leader election (Store.elect): one row per role, its holder and lease; `term` grows on each change
            # of hands. Rows are never deleted (a resignation lapses the lease), so a term is never given twice.
            """
            CREATE TABLE conveyor_leaders (
                name       TEXT PRIMARY KEY,
                holder     TEXT NOT NULL,
                term       INTEGER NOT NULL,
                expires_at INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
        ),
    ),
)

_ATTEMPT_COLUMNS = """job_id, try_number, outcome, status_code, started_at, finished_at, worker_id, result, error,
    traceback"""

MIGRATIONS += (
    # Fencing tokens (a random token per claim, never a repeated try number), attempts keyed by claim, per-task
    # claim index and the registry of (namespace, queue, task) that the claim plans its index ranges from.
    Migration(
        3,
        "fencing_tokens_and_served_tasks",
        (
            "ALTER TABLE conveyor_jobs ADD COLUMN lease_token TEXT",
            # The claim walks one range per (namespace, queue, task) that the worker serves, so jobs of tasks it
            # does not serve are never read, however many of them wait in front.
            "DROP INDEX conveyor_jobs_claim",
            """
            CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (namespace, queue, task, priority, run_at, id)
            WHERE status = 'pending' AND eligible = 1
            """,
            # Every (queue, task, namespace) that ever had a job: the claim's plan. Rows are never deleted (another
            # process may hold them in its cache of what it registered), so a row may name a range with no jobs.
            """
            CREATE TABLE conveyor_queue_tasks (
                queue     TEXT NOT NULL,
                task      TEXT NOT NULL,
                namespace TEXT NOT NULL,
                PRIMARY KEY (queue, task, namespace)
            ) WITHOUT ROWID
            """,
            "INSERT OR IGNORE INTO conveyor_queue_tasks (queue, task, namespace) "
            "SELECT DISTINCT queue, task, namespace FROM conveyor_jobs",
            # One record per claim: (job_id, lease_token). Records made before tokens existed get 'try-<n>'.
            """
            CREATE TABLE conveyor_attempts_v2 (
                job_id      TEXT NOT NULL,
                lease_token TEXT NOT NULL,
                try_number  INTEGER NOT NULL,
                outcome     TEXT NOT NULL,
                status_code INTEGER NOT NULL,
                started_at  INTEGER NOT NULL,
                finished_at INTEGER NOT NULL,
                worker_id   TEXT,
                result      TEXT,
                error       TEXT,
                traceback   TEXT,
                PRIMARY KEY (job_id, lease_token)
            )
            """,
            f"""
            INSERT INTO conveyor_attempts_v2 (lease_token, {_ATTEMPT_COLUMNS})
            SELECT 'try-' || try_number, {_ATTEMPT_COLUMNS} FROM conveyor_attempts
            """,
            "DROP TABLE conveyor_attempts",
            "ALTER TABLE conveyor_attempts_v2 RENAME TO conveyor_attempts",
        ),
    ),
)

MIGRATIONS += (
    # Keyset pages (Store.list_jobs with a key): a list by status (dead letters, the UI's status filter) seeks
    # (status, created, id) instead of sorting every job of that status for each page.
    Migration(
        4,
        "keyset_lists",
        ("CREATE INDEX conveyor_jobs_status_created ON conveyor_jobs (status, created, id)",),
    ),
    # Flow control (issue 13): a queue's rate limit (N claims per period, a burst) and its GCRA state, the
    # theoretical arrival time in µs, which the claim reads and advances in its own write transaction.
    Migration(
        5,
        "queue_rate_limits",
        (
            "ALTER TABLE conveyor_queues ADD COLUMN rate_limit INTEGER",
            "ALTER TABLE conveyor_queues ADD COLUMN rate_period REAL",
            "ALTER TABLE conveyor_queues ADD COLUMN rate_burst INTEGER",
            "ALTER TABLE conveyor_queues ADD COLUMN rate_tat INTEGER",
        ),
    ),
)

MIGRATIONS += (
    # Concurrency per key (issue 13): a job's concurrency key, and its queue's limit of processing jobs per key. The
    # claim counts a keyed queue's processing jobs per key through conveyor_jobs_processing (processing jobs are
    # few: at most the workers' slots).
    Migration(
        6,
        "concurrency_keys",
        (
            "ALTER TABLE conveyor_jobs ADD COLUMN concurrency_key TEXT",
            "ALTER TABLE conveyor_queues ADD COLUMN key_concurrency INTEGER",
        ),
    ),
)

MIGRATIONS += (
    # Unique jobs with a period and states (issue 13): a job's unique hash (what it is unique by, with its period's
    # bucket) and the statuses in which it keeps others of that hash out (bits). The enqueue reads the holder of a
    # hash through this index in its write transaction.
    Migration(
        7,
        "unique_periods",
        (
            "ALTER TABLE conveyor_jobs ADD COLUMN unique_hash TEXT",
            "ALTER TABLE conveyor_jobs ADD COLUMN unique_states INTEGER",
            "CREATE INDEX conveyor_jobs_unique_hash ON conveyor_jobs (namespace, unique_hash) "
            "WHERE unique_hash IS NOT NULL",
        ),
    ),
    # Cron (issue 13 item 5): schedules made at runtime, one JSON document per name (ScheduleRecord.to_doc), and the
    # run records of every schedule, keyed by (schedule, occurrence µs): an occurrence is recorded once.
    Migration(
        8,
        "cron_schedules",
        (
            """
            CREATE TABLE conveyor_schedules (
                name TEXT PRIMARY KEY,
                doc  TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE conveyor_schedule_runs (
                schedule   TEXT NOT NULL,
                occurrence INTEGER NOT NULL,
                doc        TEXT NOT NULL,
                PRIMARY KEY (schedule, occurrence)
            )
            """,
        ),
    ),
    # Rate limits per key (issue 13): a queue's rate_key partitions its rate limit; each key's GCRA state (the
    # theoretical arrival time, µs) is a row, kept only while that key's bucket is not full again (the claim deletes
    # rows whose time has passed, through the (namespace, queue, tat) index), so the table holds at most the keys
    # claimed within one burst's time.
    Migration(
        9,
        "rate_keys",
        (
            "ALTER TABLE conveyor_queues ADD COLUMN rate_key TEXT",
            """CREATE TABLE conveyor_rate_keys (
                namespace TEXT NOT NULL,
                queue     TEXT NOT NULL,
                key       TEXT NOT NULL,
                tat       INTEGER NOT NULL,
                PRIMARY KEY (namespace, queue, key)
            ) WITHOUT ROWID""",
            "CREATE INDEX conveyor_rate_keys_tat ON conveyor_rate_keys (namespace, queue, tat)",
        ),
    ),
    # Events across processes (store/sqlite/events.py): each published message is a row, read by every subscribed
    # process by polling `seq > last seen`. Seqs follow commit order (one writer at a time), so a poller never skips
    # a row committed after its last read; the prune always keeps the newest row, so a seq is never reused (no
    # AUTOINCREMENT, whose sqlite_sequence table would outlive drop() in a file shared with the application).
    Migration(
        10,
        "events",
        ("CREATE TABLE conveyor_events (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, message TEXT NOT NULL)",),
    ),
)

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS conveyor_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""
SELECT_APPLIED = "SELECT version FROM conveyor_schema_migrations"
INSERT_APPLIED = "INSERT INTO conveyor_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"


def apply_migrations(
    conn: sqlite3.Connection, seeds: Sequence[tuple[str, Sequence[Any]]] = (), *, where: str = "the SQLite database"
) -> list[str]:
    """Apply the missing steps in one write transaction; return their labels. `seeds` are idempotent statements
    (INSERT OR IGNORE …) run in the same transaction, e.g. the `default` namespace. The connection must be in
    autocommit mode (isolation_level=None) and not inside a transaction. A database that a newer Conveyor migrated
    (a step this code does not know) raises SchemaTooNew and is left as it was."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(CREATE_MIGRATIONS_TABLE)
        applied = {row[0] for row in conn.execute(SELECT_APPLIED)}
        known = MIGRATIONS[-1].version
        if applied and max(applied) > known:
            raise SchemaTooNew(where, str(max(applied)), str(known))
        done: list[str] = []
        for step in MIGRATIONS:
            if step.version in applied:
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(INSERT_APPLIED, (step.version, step.name, time.time_ns() // 1000))
            done.append(step.label)
        for statement, params in seeds:
            conn.execute(statement, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied step (0 on a database Conveyor never migrated)."""
    try:
        row = conn.execute("SELECT MAX(version) FROM conveyor_schema_migrations").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)
