"""SQLite-specific behaviour: URLs and options, migrations, pragmas, query plans of the hot paths, transactional
enqueue on the caller's connection, wake-ups between stores on one file, lock waits off the event loop, and the
group commit of the writer thread. The shared behaviour is in tests/conformance."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.backends.sqlite import cleanup, fresh_url

from conveyor.errors import CallerConnectionError, ConveyorError, InvalidTransition, StoreUnavailable, ValidationError
from conveyor.model import Attempt, AttemptOutcome, Finish, JobFilter, JobStatus, Lease, NewJob
from conveyor.store import open_store
from conveyor.store.sqlite import SQLiteStore, parse_sqlite_url
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.migrations import MIGRATIONS

LEASE = timedelta(seconds=30)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    u = fresh_url(tmp_path)
    try:
        yield u
    finally:
        await cleanup(u)


@pytest.fixture
async def store(url: str) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def job(task: str = "t", payload: object = None, **options: object) -> NewJob:
    return NewJob.build(task, payload, **options)  # type: ignore[arg-type]


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# ---- URLs and options ---------------------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_sqlite_url("sqlite:///rel/x.db")[0] == str(tmp_path / "rel" / "x.db")
    assert parse_sqlite_url("sqlite:////abs/x.db") == ("/abs/x.db", [])
    assert parse_sqlite_url("sqlite:////abs/x.db?busy_timeout=2")[1] == [("busy_timeout", "2")]
    for bad in ("sqlite://x.db", "sqlite:///", "sqlite:///:memory:", "postgresql://h/db"):
        with pytest.raises(ValidationError):
            parse_sqlite_url(bad)
    assert isinstance(open_store("sqlite:///rel.db"), SQLiteStore)


def test_unknown_and_bad_options() -> None:
    with pytest.raises(ValidationError, match="unknown SQLite store option"):
        SQLiteStore("sqlite:////tmp/x.db", pool_size=3)
    with pytest.raises(ValidationError):
        SQLiteStore("sqlite:////tmp/x.db?busy_timeout=soon")
    with pytest.raises(ValidationError):
        SQLiteStore("sqlite:////tmp/x.db", synchronous="sometimes")


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/dir/x.db"
    s = SQLiteStore(url)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await s.open()
    await s.close()


async def test_lazy_open_recovers_once_the_directory_exists(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    s = SQLiteStore(f"sqlite:///{directory}/x.db", lazy=True)
    await s.open()  # warns, does not raise
    with pytest.raises(StoreUnavailable):
        await s.enqueue([job()])
    directory.mkdir()
    (stored,) = await s.enqueue([job()])  # reconnects and migrates by itself
    assert (await s.get_job(stored.id)) is not None
    await s.close()


# ---- schema -------------------------------------------------------------------------------------------------------


async def test_migrations_are_versioned_and_idempotent(url: str) -> None:
    s = SQLiteStore(url)
    applied = await s.migrate()
    assert applied == [m.label for m in MIGRATIONS]
    assert await s.migrate() == []
    await s.open()
    await s.close()
    s2 = SQLiteStore(url)
    await s2.open()
    assert await s2.migrate() == []
    await s2.close()
    path, _ = parse_sqlite_url(url)
    with sqlite3.connect(path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM conveyor_schema_migrations ORDER BY version")]
        assert versions == [m.version for m in MIGRATIONS]
        assert conn.execute("SELECT COUNT(*) FROM conveyor_namespaces WHERE name = 'default'").fetchone()[0] == 1
    conn.close()


async def test_a_version_1_database_is_upgraded_with_its_jobs_and_attempts(url: str) -> None:
    """Migration 2 (fencing tokens, attempts keyed by claim, the per-task claim index and its registry) keeps what
    a database of version 1 holds: pending jobs become claimable by task, old attempt records stay readable, and a
    job claimed before the upgrade (no token) is rescued with a record of its own."""
    path, _ = parse_sqlite_url(url)
    now = time.time_ns() // 1000
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE conveyor_schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at INT)")
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO conveyor_schema_migrations VALUES (1, 'initial', ?)", (now,))
        conn.execute("INSERT INTO conveyor_queues (namespace, name) VALUES ('default', 'default')")
        insert = (
            "INSERT INTO conveyor_jobs (id, namespace, queue, task, payload, status, priority, run_at, attempts,"
            " max_attempts, try_number, created, updated, worker_id, lease_expires_at, started_at)"
            " VALUES (?, 'default', 'default', ?, '{}', ?, 0, ?, ?, 3, ?, ?, ?, ?, ?, ?)"
        )
        conn.execute(insert, ("old-pending", "mail", "pending", now - 10, 1, 1, now, now, None, None, None))
        conn.execute(insert, ("old-running", "mail", "processing", now - 20, 1, 1, now, now, "w0", now + 1, now))
        conn.execute(
            "INSERT INTO conveyor_attempts (job_id, try_number, outcome, status_code, started_at, finished_at)"
            " VALUES ('old-pending', 1, 'retry', 500, ?, ?)",
            (now - 5, now - 4),
        )
    conn.close()
    store = SQLiteStore(url)
    await store.open()
    try:
        assert await store.claim("w", ["default"], 10, LEASE, tasks=["other"]) == []
        (got,) = await store.claim("w", ["default"], 10, LEASE, tasks=["mail"])
        assert got.id == "old-pending" and got.lease_token and got.try_number == 2
        (old,) = await store.attempts("old-pending")
        assert (old.try_number, old.outcome, old.lease_token) == (1, AttemptOutcome.RETRY, "try-1")
        (rescued,) = await store.rescue(now=datetime.now(UTC) + timedelta(seconds=2))
        assert rescued.id == "old-running" and rescued.status is JobStatus.PENDING
        (lost,) = await store.attempts("old-running")
        assert (lost.outcome, lost.lease_token) == (AttemptOutcome.LOST, "try-1")
    finally:
        await store.close()


async def test_concurrent_first_opens_migrate_once(url: str) -> None:
    stores = [SQLiteStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        assert await s.migrate() == []
        await s.close()


async def test_pragmas(store: SQLiteStore) -> None:
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    writer = store._writer
    assert writer is not None
    sync = await writer.submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    timeout = await writer.submit(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0])
    assert sync == 1  # NORMAL
    assert timeout == 5000


def _plan(conn: sqlite3.Connection, sql: str, params: object) -> str:
    return "\n".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))  # type: ignore[arg-type]


async def test_hot_paths_use_their_indexes(store: SQLiteStore) -> None:
    """The claim is an ordered range scan of the partial claim index per (namespace, queue, task) (no scan of the
    table, no sort inside a range); finishes look jobs up by primary key; lanes and unique keys use their indexes."""
    await store.enqueue([job(payload={"n": i}) for i in range(50)])
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)
    try:
        now = time.time_ns() // 1000
        ranges = '[["default", "default", "a"], ["default", "b", "c"]]'
        plan = _plan(conn, q.CLAIM_CANDIDATES, [ranges, now, 10, 10])
        assert "USING INDEX conveyor_jobs_claim (namespace=? AND queue=? AND task=?)" in plan, plan
        assert "SCAN conveyor_jobs" not in plan and "SCAN x" not in plan and "SCAN y" not in plan, plan
        arms = _plan(conn, q.SELECT_CLAIM_ARMS, ['["default"]', '["a", "b"]'])
        assert "SCAN conveyor_jobs" not in arms, arms
        for sql, params in (
            (q.CLAIM, [now, "w", now, '[[1, "t1"], [2, "t2"]]']),
            (q.SELECT_JOBS_BY_ROWID, ["[1, 2]"]),
            (q.HELD_LEASES, ['[["a", "t1"]]']),
            (q.FINISH_MANY, [now, "[]"]),
            (q.HEARTBEAT, [now, now, '["a"]']),
        ):
            found = _plan(conn, sql, params)
            assert "SCAN conveyor_jobs" not in found, (sql, found)
            assert "USING INTEGER PRIMARY KEY" in found or "sqlite_autoindex_conveyor_jobs_1 (id=?)" in found, found
        unique = _plan(conn, q.SELECT_ACTIVE_BY_UNIQUE_KEY, ["default", "k"])
        assert "conveyor_jobs_unique" in unique
        lane = _plan(conn, q.CLAIM_LANE_HEAD, [now, "w", now, "default", "u:1", "t"])
        assert "conveyor_jobs_lane_head" in lane or "conveyor_jobs_lane" in lane
        prune = _plan(conn, q.SELECT_PRUNABLE, ["completed", now, 10, "default"])
        assert "conveyor_jobs_finished" in prune
    finally:
        conn.close()


async def test_a_claim_over_more_ranges_than_a_compound_select_allows(store: SQLiteStore) -> None:
    """The claim reads one index range per (namespace, queue, task) in one fixed statement (the ranges arrive as
    JSON), not a UNION ALL per range: SQLite refuses a compound SELECT of more than 500 terms, which GS2 deployments
    with hundreds of namespaces (times their tasks) reach."""
    news = [job(f"t{i % 3}", namespace=f"ns-{i}") for i in range(600)]
    await store.enqueue(news)
    claimed = await store.claim("w", ["default"], 1000, LEASE)
    assert {j.id for j in claimed} == {n.id for n in news}


async def test_times_round_trip_exactly(store: SQLiteStore) -> None:
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    whens = [base + timedelta(microseconds=rng.randrange(0, 10**15)) for _ in range(200)]
    whens += [datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2191, 10, 1, 0, 0, 0, 1, tzinfo=UTC)]
    whens += [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(0, 10**17)) for _ in range(200)]
    stored = await store.enqueue([job(run_at=w) for w in whens])
    for s, w in zip(stored, whens, strict=True):
        got = await store.get_job(s.id)
        assert got is not None
        assert got.run_at == w
        assert got.run_at.tzinfo is not None
        assert got.created == s.created


# ---- serial lanes at scale ----------------------------------------------------------------------------------------


async def test_a_long_blocked_lane_does_not_hide_other_work(store: SQLiteStore) -> None:
    """Only a lane's head is eligible, so 2,000 jobs behind a busy head cost nothing to skip."""
    await store.enqueue([job(payload={"n": i}, user_id="u1") for i in range(2000)])
    (head,) = await store.claim("w", ["default"], 10, LEASE)  # one per lane per claim
    assert head.user_id == "u1"
    others = await store.enqueue([job(payload={"other": i}) for i in range(5)])
    got = await store.claim("w", ["default"], 10, LEASE)
    assert [j.id for j in got] == [j.id for j in others]
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)
    try:
        eligible = conn.execute(
            "SELECT COUNT(*) FROM conveyor_jobs WHERE serial_key = 'u:u1' AND eligible = 1"
        ).fetchone()[0]
        assert eligible == 0  # the lane is busy: nobody in it may start
    finally:
        conn.close()
    await store.finish([Finish(head.lease, JobStatus.COMPLETED)])
    (nxt,) = await store.claim("w", ["default"], 10, LEASE)
    assert nxt.payload == {"n": 1}


# ---- enqueue on the caller's connection ---------------------------------------------------------------------------


async def test_enqueue_on_connection_commit_and_rollback(store: SQLiteStore) -> None:
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)  # default (legacy) transaction control
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.commit()

        conn.execute("INSERT INTO orders (item) VALUES ('book')")
        (kept,) = store.enqueue_on_connection(conn, [job("ship", {"order": 1})])
        assert await store.get_job(kept.id) is None  # not visible before the caller commits
        conn.commit()
        assert (await store.get_job(kept.id)) is not None

        conn.execute("INSERT INTO orders (item) VALUES ('lamp')")
        (dropped,) = store.enqueue_on_connection(conn, [job("ship", {"order": 2})])
        conn.rollback()
        assert await store.get_job(dropped.id) is None
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 1

        # no transaction open: refused, unless the caller says so; then one is begun so that the batch is atomic,
        # and the caller's next commit commits it
        with pytest.raises(CallerConnectionError, match="no transaction open"):
            store.enqueue_on_connection(conn, [job("a")])
        jobs = store.enqueue_on_connection(
            conn, [job("a"), job("b", unique_key="k"), job("c", unique_key="k")], require_transaction=False
        )
        assert conn.in_transaction
        assert [j.duplicate for j in jobs] == [False, False, True]
        conn.commit()
        claimed = await store.claim("w", ["default"], 10, LEASE)
        assert {j.task for j in claimed} == {"ship", "a", "b"}
    finally:
        conn.close()


async def test_enqueue_on_autocommit_connection_stands_alone(store: SQLiteStore) -> None:
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(CallerConnectionError, match="autocommit"):
            store.enqueue_on_connection(conn, [job()])
        (j,) = store.enqueue_on_connection(conn, [job()], require_transaction=False)
        assert not conn.in_transaction
        assert (await store.get_job(j.id)) is not None
        conn.execute("BEGIN")
        (j2,) = store.enqueue_on_connection(conn, [job()])
        conn.execute("ROLLBACK")
        assert await store.get_job(j2.id) is None
    finally:
        conn.close()


async def test_enqueue_on_connection_refuses_other_databases(store: SQLiteStore, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "other.db")
    try:
        with pytest.raises(ValidationError, match="same file"):
            store.enqueue_on_connection(other, [job()])
    finally:
        other.close()
    with pytest.raises(ValidationError, match=r"sqlite3\.Connection"):
        store.enqueue_on_connection(object(), [job()])


async def test_enqueue_on_a_closed_or_locked_caller_connection_names_it(store: SQLiteStore) -> None:
    """Problems of the caller's connection are the caller's (CallerConnectionError, with what to do), never a
    store outage whose "Conveyor reconnects by itself" would be false."""
    path, _ = parse_sqlite_url(store.url)
    closed = sqlite3.connect(path)
    closed.close()
    with pytest.raises(CallerConnectionError, match="closed"):
        store.enqueue_on_connection(closed, [job()])
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, timeout=0.1)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
        waiter.execute("CREATE TEMP TABLE t (x)")  # in a transaction, but cannot write the main database
        waiter.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(CallerConnectionError, match="locked"):
            store.enqueue_on_connection(waiter, [job()])
        holder.execute("ROLLBACK")
    finally:
        holder.close()
        waiter.close()
    assert (await store.stats()).total == 0


def test_enqueue_on_connection_needs_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    s = SQLiteStore(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(ConveyorError, match="conveyor migrate"):
            s.enqueue_on_connection(conn, [job()], require_transaction=False)
        assert not conn.in_transaction
    finally:
        conn.close()


# ---- wake-ups, lock waits, group commit ---------------------------------------------------------------------------


async def test_enqueue_wakes_another_store_on_the_same_file(url: str) -> None:
    a, b = SQLiteStore(url), SQLiteStore(url)
    await a.open()
    await b.open()
    try:
        waiter = asyncio.create_task(b.wait_for_jobs(30))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await a.enqueue([job()])
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started < 5
    finally:
        await a.close()
        await b.close()


async def test_lock_waits_do_not_block_the_event_loop(store: SQLiteStore) -> None:
    """Another process (here: connection) holds the write lock; the claim waits on its thread while the loop runs."""
    await store.enqueue([job()])
    path, _ = parse_sqlite_url(store.url)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        claim = asyncio.create_task(store.claim("w", ["default"], 10, LEASE))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20
        assert not claim.done()
        # reads go on while the writer waits (WAL)
        assert (await store.stats()).pending == 1
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    got = await asyncio.wait_for(claim, 10)
    assert len(got) == 1


async def test_a_lock_held_too_long_is_store_unavailable(url: str) -> None:
    s = SQLiteStore(url, busy_timeout=0.05, busy_retry=0.2)
    await s.open()
    path, _ = parse_sqlite_url(url)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            await s.enqueue([job()])
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    await s.enqueue([job()])  # fine again
    await s.close()


async def test_group_commit_contains_each_operations_failure(store: SQLiteStore) -> None:
    """Writes queued together share a transaction, but one's error rolls back only its own changes."""
    (done,) = await store.enqueue([job()])
    (claimed,) = await store.claim("w", ["default"], 1, LEASE)
    await store.finish([Finish(claimed.lease, JobStatus.COMPLETED)])
    results = await asyncio.gather(
        store.enqueue([job("first")]),
        store.requeue(done.id),  # completed: InvalidTransition
        store.enqueue([job("second")]),
        store.enqueue([job("dup", job_id=done.id)]),  # id taken: refused, nothing stored
        store.kv_set("k", "v"),
        return_exceptions=True,
    )
    assert isinstance(results[1], InvalidTransition)
    assert isinstance(results[3], ValidationError)
    assert results[4] is True
    tasks = {j.task for j in (await store.list_jobs(JobFilter())).items}
    assert tasks == {"t", "first", "second"}
    assert await store.kv_get("k") == "v"


async def test_finish_batch_with_attempts_and_stale_reports(store: SQLiteStore) -> None:
    await store.enqueue([job(payload={"n": i}) for i in range(30)])
    claimed = await store.claim("w", ["default"], 30, LEASE)
    now = datetime.now(UTC)
    finishes = [
        Finish(
            j.lease,
            JobStatus.COMPLETED,
            attempt=Attempt(j.id, j.try_number, AttemptOutcome.COMPLETED, 200, now, now, "w", {"r": j.payload}),
            result={"r": j.payload},
        )
        for j in claimed
    ]
    stale = Finish(Lease(claimed[0].id, 99), JobStatus.FAILED, error="late")
    assert await store.finish([stale, *finishes, finishes[0]]) == [False] + [True] * 30 + [False]
    for j in claimed:
        got = await store.get_job(j.id)
        assert got is not None and got.status is JobStatus.COMPLETED and got.result == {"r": j.payload}
        (attempt,) = await store.attempts(j.id)
        assert attempt.result == {"r": j.payload} and attempt.status_code == 200


async def test_a_cancelled_claim_hands_its_jobs_back(store: SQLiteStore) -> None:
    """The caller gave up while the claim ran (here: waiting for another connection's lock): whatever it took is
    released at once, without counting an attempt, instead of waiting for the lease to expire."""
    (queued,) = await store.enqueue([job()])
    path, _ = parse_sqlite_url(store.url)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        claim = asyncio.create_task(store.claim("w", ["default"], 10, LEASE))
        await asyncio.sleep(0.2)  # the writer thread is inside the claim, waiting for the lock
        claim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claim
    finally:
        blocker.execute("COMMIT")
        blocker.close()

    async def back() -> bool:
        got = await store.get_job(queued.id)
        return (
            got is not None
            and got.updated > queued.updated  # claimed, then handed back
            and got.status is JobStatus.PENDING
            and got.try_number == 0
            and got.attempts == 0
        )

    deadline = time.monotonic() + 10
    while not await back():
        assert time.monotonic() < deadline, await store.get_job(queued.id)
        await asyncio.sleep(0.02)
    (again,) = await store.claim("w", ["default"], 10, LEASE)
    assert again.id == queued.id and again.try_number == 1


def test_app_enqueue_inside_sqlalchemy_and_sqlite3_transactions(tmp_path: Path) -> None:
    """The app's `connection=` path on SQLite: a plain sqlite3 connection and SQLAlchemy connections/sessions
    (unwrapped to their sqlite3 connection) both commit or roll back the jobs with the caller's own rows."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    from conveyor.app import Conveyor

    path = tmp_path / "app.db"
    with Conveyor(f"sqlite:///{path}") as app:
        app.open()  # migrates
        engine = sqlalchemy.create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO orders (item) VALUES ('book')")
            kept = app.enqueue("ship", {"item": "book"}, connection=conn)
        with Session(engine) as session:
            session.execute(sqlalchemy.text("INSERT INTO orders (item) VALUES ('lamp')"))
            dropped = app.enqueue("ship", {"item": "lamp"}, connection=session)
            session.rollback()
        raw = sqlite3.connect(path)
        try:
            raw.execute("INSERT INTO orders (item) VALUES ('pen')")
            pen = app.enqueue_many([{"task": "ship", "payload": {"item": "pen"}}], connection=raw)[0]
            raw.commit()
        finally:
            raw.close()
        assert app.get_job(kept.id) is not None
        assert app.get_job(dropped.id) is None
        assert app.get_job(pen.id) is not None
        engine.dispose()


async def test_prune_works_in_chunks_up_to_the_limit(store: SQLiteStore) -> None:
    await store.enqueue([job(payload={"n": i}) for i in range(1200)])
    done = 0
    while done < 1200:
        claimed = await store.claim("w", ["default"], 100, LEASE)
        now = datetime.now(UTC)
        finishes = [
            Finish(
                j.lease,
                JobStatus.COMPLETED,
                attempt=Attempt(j.id, j.try_number, AttemptOutcome.COMPLETED, 200, now, now),
            )
            for j in claimed
        ]
        assert all(await store.finish(finishes))
        done += len(claimed)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    assert await store.prune(soon, soon, limit=1000) == 1000
    assert await store.prune(soon, soon) == 200
    assert (await store.stats()).completed == 0
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM conveyor_attempts").fetchone()[0] == 0
    finally:
        conn.close()


async def test_checkpoints_run_off_the_writer_thread(store: SQLiteStore) -> None:
    """The writer checkpoints only past a large safety net; a background thread copies the log back in PASSIVE
    mode, so no commit stalls on a checkpoint's fsync (checkpoint.py)."""
    from conveyor.store.sqlite.checkpoint import WRITER_AUTOCHECKPOINT

    threshold = await store._write(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    assert threshold == WRITER_AUTOCHECKPOINT
    for _ in range(10):  # well past SQLite's default threshold of 1,000 pages of log
        await store.enqueue([NewJob.build("t", {"pad": "x" * 2000}) for _ in range(200)])
    checkpointer = store._checkpointer
    assert checkpointer is not None

    deadline = time.monotonic() + 10
    while not (checkpointer.last is not None and checkpointer.last[1] > 1000 and checkpointer.last[2] > 0):
        assert time.monotonic() < deadline, f"no background checkpoint copied the log: {checkpointer.last}"
        await asyncio.sleep(0.05)
    assert (await store.stats()).pending == 2000


async def test_close_stops_the_checkpoint_thread(url: str) -> None:
    s = SQLiteStore(url)
    await s.open()
    await s.enqueue([NewJob.build("t")])
    checkpointer = s._checkpointer
    assert checkpointer is not None and checkpointer.alive
    await s.close()
    assert not checkpointer.alive and s._checkpointer is None


async def test_drop_keeps_a_file_shared_with_the_application(url: str) -> None:
    """A file that also holds the application's tables (transactional enqueue) loses only Conveyor's tables."""
    path, _ = parse_sqlite_url(url)
    store = SQLiteStore(url)
    await store.open()
    await store.enqueue([job("t")])
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.execute("INSERT INTO orders (item) VALUES ('book')")
    await store.drop()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"orders"}
        assert conn.execute("SELECT item FROM orders").fetchall() == [("book",)]
    again = SQLiteStore(url)
    await again.open()  # Conveyor's tables come back, empty
    try:
        assert (await again.stats()).total == 0
    finally:
        await again.close()


async def test_drop_removes_the_file_and_its_companions(url: str) -> None:
    path, _ = parse_sqlite_url(url)
    store = SQLiteStore(url)
    await store.open()
    await store.wait_for_jobs(0.01)  # binds a wake socket beside the file
    await store.drop()
    leftovers = [p for p in os.listdir(os.path.dirname(path)) if p.startswith(os.path.basename(path))]
    assert leftovers == []
    with pytest.raises(ValidationError, match="default"):
        await SQLiteStore(f"sqlite:///{os.path.dirname(path)}/conveyor.db").drop()


async def test_keyset_pages_seek_an_index_whatever_the_depth(store: SQLiteStore) -> None:
    """A deep page costs what page 1 costs (issue 16): the keyset is a range of (created, id), of (status, created,
    id) for a status filter, read in order — never a sort of every match (no temp b-tree)."""
    from conveyor.model import JobFilter, JobKey, JobSort, JobStatus

    await store.enqueue([job(payload={"n": i}) for i in range(3000)])
    path, _ = parse_sqlite_url(store.url)
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")
        for flt, index in ((JobFilter(), "conveyor_jobs_created"), (JobFilter(status=JobStatus.PENDING), "status")):
            for sort in (JobSort.CREATED_DESC, JobSort.CREATED):
                deep = (await store.list_jobs(flt, 1, 900, sort=sort)).items[0]
                _, page_sql, params = store.list_statements(flt, JobKey.of(deep, sort), sort)
                plan = _plan(conn, page_sql, {**params, "limit": 21, "offset": 0})
                assert "USING" in plan and index in plan, plan
                assert "TEMP B-TREE" not in plan and "SCAN conveyor_jobs" not in plan, plan
    finally:
        conn.close()
