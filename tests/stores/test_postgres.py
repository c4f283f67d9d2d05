"""PostgreSQL-specific behaviour: schemas and migrations, the claim's plan at scale, LISTEN/NOTIFY, exact caps and
lanes under concurrent claimers, transactional enqueue (psycopg sync/async, SQLAlchemy) and transactional handlers,
and lazy opening while the database is down. The shared behaviour is in tests/conformance."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests.backends import postgres as backend

from conveyor import Conveyor
from conveyor.errors import CallerConnectionError, StoreUnavailable
from conveyor.model import Attempt, AttemptOutcome, Finish, Job, JobStatus, NewJob, QueueSettings, utcnow
from conveyor.store.postgres import PostgresStore
from conveyor.store.postgres.migrations import MIGRATIONS

pytestmark = pytest.mark.skipif(
    "postgresql" not in os.environ.get("CONVEYOR_TEST_STORES", "postgresql"),
    reason="PostgreSQL not selected in CONVEYOR_TEST_STORES",
)

LEASE = timedelta(seconds=30)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    u = backend.fresh_url(tmp_path)
    try:
        yield u
    finally:
        await backend.cleanup(u)


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _new(**options: Any) -> NewJob:
    return NewJob.build("task", options.pop("payload", None), **options)


def _done(job: Any) -> Finish:
    now = utcnow()
    return Finish(
        job.lease,
        JobStatus.COMPLETED,
        attempt=Attempt(job.id, job.try_number, AttemptOutcome.COMPLETED, 200, job.started_at or now, now),
    )


async def _server() -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(backend.SERVER_URL, autocommit=True)


# ---- schema and migrations --------------------------------------------------------------------------------------


async def test_tables_live_in_the_url_schema_and_migrations_are_versioned(store: PostgresStore) -> None:
    async with await _server() as conn:
        rows = await (
            await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [store.schema]
            )
        ).fetchall()
        tables = {r[0] for r in rows}
        assert {"jobs", "attempts", "namespaces", "queue_settings", "workers", "kv", "schema_migrations"} <= tables
        versions = await (
            await conn.execute(
                sql.SQL("SELECT version, name FROM {}.schema_migrations").format(sql.Identifier(store.schema))
            )
        ).fetchall()
        assert versions == [(version, name) for version, name, _ in MIGRATIONS]
    assert await store.migrate() == []  # up to date


async def test_migrate_works_without_opening_the_store(url: str) -> None:
    store = PostgresStore(url)
    assert await store.migrate() == [name for _, name, _ in MIGRATIONS]
    assert await store.migrate() == []
    await store.open()
    try:
        assert await store.enqueue([_new()])
    finally:
        await store.close()


async def test_a_version_1_schema_is_upgraded_with_its_jobs_attempts_and_settings(url: str) -> None:
    """Migration 0002 keeps what a version-1 schema holds: pending jobs become claimable by task, old attempt records
    stay readable (keyed 'try-<n>'), namespaces switched off stay off, and a job claimed before the upgrade (no
    token) is rescued with a record of its own."""
    from conveyor.store.postgres.migrations import MIGRATIONS

    schema = backend.schema_of(url)
    quoted = f'"{schema}"'
    async with await _server() as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE {}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema))
        )
        _, name, text = MIGRATIONS[0]
        await conn.execute(text.replace("{schema}", quoted))  # type: ignore[arg-type]
        await conn.execute(f"INSERT INTO {quoted}.schema_migrations (version, name) VALUES (1, %s)", [name])
        insert = (
            f"INSERT INTO {quoted}.jobs (id, namespace, queue, task, payload, status, run_at, attempts, max_attempts,"
            " try_number, created, updated, worker_id, lease_expires_at, started_at)"
            " VALUES (%s, %s, 'default', 'mail', '{}', %s, now() - interval '1 minute', 1, 3, 1, now(), now(),"
            " %s, %s, now())"
        )
        await conn.execute(insert, ["old-pending", "default", "pending", None, None])
        await conn.execute(insert, ["old-manual", "manual", "pending", None, None])
        await conn.execute(insert, ["old-running", "default", "processing", "w0", utcnow() - timedelta(seconds=1)])
        await conn.execute(
            f"INSERT INTO {quoted}.attempts (job_id, try_number, outcome, status_code, started_at, finished_at)"
            " VALUES ('old-pending', 1, 'retry', 500, now(), now())"
        )
        await conn.execute(
            f"INSERT INTO {quoted}.namespaces (name, doc) VALUES ('manual', %s)",
            [json.dumps({"name": "manual", "auto_run": False})],
        )
    store = PostgresStore(url)
    await store.open()
    try:
        assert await store.claim("w", ["default"], 10, LEASE, tasks=["other"]) == []
        (got,) = await store.claim("w", ["default"], 10, LEASE, tasks=["mail"])
        assert got.id == "old-pending" and got.lease_token and got.try_number == 2  # not old-manual: auto_run off
        (old,) = await store.attempts("old-pending")
        assert (old.try_number, old.outcome, old.lease_token) == (1, AttemptOutcome.RETRY, "try-1")
        (rescued,) = await store.rescue()
        assert rescued.id == "old-running" and rescued.status is JobStatus.PENDING
        (lost,) = await store.attempts("old-running")
        assert (lost.outcome, lost.lease_token) == (AttemptOutcome.LOST, "try-1")
        assert await store.finish([_done(got)]) == [True]
    finally:
        await store.close()


async def test_several_processes_migrating_at_once_apply_each_migration_once(url: str) -> None:
    stores = [PostgresStore(url) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        (job,) = await stores[0].enqueue([_new()])
        assert (await stores[4].get_job(job.id)) is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with await _server() as conn:
        (count,) = await (
            await conn.execute(
                sql.SQL("SELECT count(*) FROM {}.schema_migrations").format(sql.Identifier(backend.schema_of(url)))
            )
        ).fetchone() or (0,)
        assert count == len(MIGRATIONS)


def test_schema_must_be_a_plain_identifier() -> None:
    from conveyor.errors import ValidationError

    with pytest.raises(ValidationError):
        PostgresStore("postgresql://postgres@127.0.0.1/test?schema=bad;drop")
    assert PostgresStore("postgresql://postgres@127.0.0.1/test").schema == "conveyor"


# ---- the claim's plan at scale ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_claim_stays_an_index_scan_with_a_million_finished_rows(store: PostgresStore) -> None:
    """The claim walks the partial index over pending rows; finished rows are not in it, so they cost nothing."""
    s = sql.Identifier(store.schema)
    async with await _server() as conn:
        await conn.execute(
            sql.SQL(
                """
                INSERT INTO {}.jobs (id, namespace, queue, task, payload, status, run_at, max_attempts, attempts,
                                     try_number, created, updated, finished_at)
                SELECT 'done-' || g, 'default', 'default', 'task', '{{}}', 'completed', now() - interval '1 hour',
                       3, 1, 1, now() - interval '1 hour', now(), now() - interval '1 minute'
                FROM generate_series(1, 1000000) AS g
                """
            ).format(s)
        )
        await conn.execute(sql.SQL("ANALYZE {}.jobs").format(s))
    await store.enqueue([_new(payload={"n": i}) for i in range(50)])
    params = {
        "worker_id": "w",
        "queues": ["default"],
        "tasks": ["task"],
        "arm_queues": ["default"],
        "arm_tasks": ["task"],
        "limit": 10,
        "lease": LEASE,
        "namespaces": None,
        "exclude": [],
        "synchronous_commit": "on",
    }
    async with await _server() as conn:
        rows = await (await conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + store._q.CLAIM, params)).fetchall()
    plan = "\n".join(r[0] for r in rows)
    print(plan)
    assert "Index Scan using jobs_ready on jobs" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
    # and it is fast: the claim itself (10 jobs) well under the time a scan of a million rows would take
    t = time.perf_counter()
    claimed = await store.claim("w", ["default"], 10, LEASE)
    assert len(claimed) == 10
    assert time.perf_counter() - t < 1.0


# ---- wake-ups ---------------------------------------------------------------------------------------------------


async def test_notify_wakes_a_waiter_in_another_store_instance(url: str) -> None:
    waiter, enqueuer = PostgresStore(url), PostgresStore(url, listen=False)
    await waiter.open()
    await enqueuer.open()
    try:
        await asyncio.wait_for(waiter.listening.wait(), 10)
        started = time.monotonic()
        wait = asyncio.create_task(waiter.wait_for_jobs(10.0))
        await asyncio.sleep(0.05)
        await enqueuer.enqueue([_new()])
        await asyncio.wait_for(wait, 5.0)
        assert time.monotonic() - started < 5.0
    finally:
        await enqueuer.close()
        await waiter.close()


async def test_listener_reconnects_after_its_connection_is_killed(url: str) -> None:
    waiter, enqueuer = PostgresStore(url), PostgresStore(url, listen=False)
    await waiter.open()
    await enqueuer.open()
    try:
        await asyncio.wait_for(waiter.listening.wait(), 10)
        async with await _server() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                [f'LISTEN "{waiter.channel}"%'],
            )

        async def woken() -> bool:
            wait = asyncio.create_task(waiter.wait_for_jobs(3.0))
            await asyncio.sleep(0.05)
            t = time.monotonic()
            await enqueuer.enqueue([_new()])
            await wait
            return time.monotonic() - t < 2.5

        deadline = time.monotonic() + 20
        while not await woken():
            assert time.monotonic() < deadline, "the listener never came back"
    finally:
        await enqueuer.close()
        await waiter.close()


# ---- exact caps and lanes under concurrent claimers -------------------------------------------------------------


async def test_queue_cap_holds_across_concurrent_claimers(url: str) -> None:
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].put_queue_settings(QueueSettings("default", "capped", concurrency=3))
        await stores[0].enqueue([_new(queue="capped", payload=i) for i in range(40)])
        claims = await asyncio.gather(
            *(s.claim(f"w{i}-{k}", ["capped"], 10, LEASE) for i, s in enumerate(stores) for k in range(3))
        )
        assert sum(len(c) for c in claims) == 3
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_lane_never_runs_two_jobs_under_concurrent_claimers(url: str) -> None:
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].enqueue([_new(user_id=f"u{i % 5}", payload=i) for i in range(100)])
        running: dict[str, str] = {}
        order: dict[str, list[int]] = {}

        async def work(s: PostgresStore, wid: str) -> None:
            idle = 0
            while idle < 20:
                jobs = await s.claim(wid, ["default"], 5, LEASE)
                if not jobs:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                for job in jobs:
                    assert job.user_id not in running, f"lane {job.user_id} runs two jobs"
                    running[job.user_id or ""] = job.id
                    order.setdefault(job.user_id or "", []).append(job.payload)
                await asyncio.sleep(0.002)
                for job in jobs:
                    del running[job.user_id or ""]
                assert all(await s.finish([_done(j) for j in jobs]))

        await asyncio.gather(*(work(s, f"w{i}-{k}") for i, s in enumerate(stores) for k in range(2)))
        assert sum(len(v) for v in order.values()) == 100
        for seq in order.values():
            assert seq == sorted(seq)  # strict FIFO per lane
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_batched_finish_and_heartbeat_in_one_call(store: PostgresStore) -> None:
    await store.enqueue([_new(payload=i) for i in range(20)])
    jobs = await store.claim("w", ["default"], 20, LEASE)
    states = await store.heartbeat([j.lease for j in jobs], timedelta(seconds=60))
    assert all(s.held for s in states)
    stale = jobs[0].lease.__class__(jobs[0].id, jobs[0].try_number + 7)
    ok = await store.finish([_done(j) for j in jobs] + [Finish(stale, JobStatus.COMPLETED)])
    assert ok == [True] * 20 + [False]
    assert (await store.stats()).completed == 20
    assert len(await store.attempts(jobs[3].id)) == 1


async def test_large_batches_go_through_copy_and_keep_order(store: PostgresStore) -> None:
    news = [_new(payload={"i": i, "s": 'quote " back\\slash \t tab'}) for i in range(500)]
    out = await store.enqueue(news)
    assert [j.id for j in out] == [n.id for n in news]
    got = await store.get_job(news[123].id)
    assert got is not None and got.payload == {"i": 123, "s": 'quote " back\\slash \t tab'}
    from conveyor.errors import ValidationError

    with pytest.raises(ValidationError):  # a repeated id is refused, and nothing of the batch is stored
        await store.enqueue([_new() for _ in range(100)] + [news[0]])
    assert (await store.stats()).pending == 500


# ---- transactional enqueue --------------------------------------------------------------------------------------


def _count_sync(url: str, job_id: str) -> int:
    conninfo, schema = backend_parse(url)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.jobs WHERE id = %s").format(sql.Identifier(schema)), [job_id]
        ).fetchone()
        return int(row[0]) if row else 0


def backend_parse(url: str) -> tuple[str, str]:
    from conveyor.store.postgres import parse_url

    return parse_url(url)


async def test_enqueue_on_a_sync_psycopg_connection_commits_and_rolls_back(store: PostgresStore, url: str) -> None:
    conninfo, _ = backend_parse(url)

    def scenario() -> tuple[str, str]:
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT 1")  # the caller's work: its transaction is open
            (kept,) = store.enqueue_on_connection(conn, [_new(payload="kept")])
            conn.commit()
            conn.execute("SELECT 1")
            (dropped,) = store.enqueue_on_connection(conn, [_new(payload="dropped")])
            conn.rollback()
        return kept.id, dropped.id

    kept, dropped = await asyncio.to_thread(scenario)
    assert await store.get_job(kept) is not None
    assert await store.get_job(dropped) is None


async def test_enqueue_on_an_async_connection_is_invisible_until_commit(store: PostgresStore, url: str) -> None:
    conninfo, _ = backend_parse(url)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await conn.execute("SELECT 1")
        (job,) = await store.aenqueue_on_connection(conn, [_new(payload="tx")])
        assert await store.get_job(job.id) is None  # not committed yet: other connections cannot see it
        assert await store.claim("w", ["default"], 10, LEASE) == []
        await conn.commit()
    assert await store.get_job(job.id) is not None
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        (gone,) = await store.aenqueue_on_connection(conn, [_new(payload="rolled back")], require_transaction=False)
        await conn.rollback()
    assert await store.get_job(gone.id) is None


async def test_unique_jobs_on_the_callers_connections(store: PostgresStore, url: str) -> None:
    """`unique=` through a caller's transaction (sync and async): the duplicate is answered with the holder, a
    pending holder's payload replaced, and nothing is visible until the caller commits."""
    conninfo, _ = backend_parse(url)
    rule: Any = {"by": ["task"], "replace": ["payload"]}

    def sync_scenario() -> tuple[Job, Job, Job]:
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT 1")
            first, plain, dup = store.enqueue_on_connection(
                conn, [_new(payload=1, unique=rule), _new(payload="plain"), _new(payload=2, unique=rule)]
            )
            conn.commit()
        return first, plain, dup

    first, plain, dup = await asyncio.to_thread(sync_scenario)
    assert not first.duplicate and not plain.duplicate
    assert dup.duplicate and dup.id == first.id
    stored = await store.get_job(first.id)
    assert stored is not None and stored.payload == 2
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await conn.execute("SELECT 1")
        (again,) = await store.aenqueue_on_connection(conn, [_new(payload=3, unique=rule)])
        assert again.duplicate and again.id == first.id and again.payload == 3
        await conn.rollback()  # the replace goes with the caller's transaction
    stored = await store.get_job(first.id)
    assert stored is not None and stored.payload == 2


async def test_the_callers_connection_rules(store: PostgresStore, url: str) -> None:
    """enqueue(..., connection=) names the caller's connection and what to do: closed, failed transaction,
    autocommit or idle (refused unless require_transaction=False), a driver error in the middle — never a
    StoreUnavailable "Conveyor reconnects by itself", and nothing is stored by a refused call."""
    conninfo, _ = backend_parse(url)
    app = Conveyor(store=store)

    def sync_rules() -> str:
        closed = psycopg.connect(conninfo)
        closed.close()
        with pytest.raises(CallerConnectionError, match="is closed"):
            app.enqueue("t", connection=closed)
        with psycopg.connect(conninfo) as conn:
            with pytest.raises(CallerConnectionError, match="no transaction open"):
                app.enqueue("t", connection=conn)
            conn.execute("SELECT 1")
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            with pytest.raises(CallerConnectionError, match="already failed"):
                app.enqueue("t", connection=conn)
            conn.rollback()
        with psycopg.connect(conninfo, autocommit=True) as auto:
            with pytest.raises(CallerConnectionError, match="autocommit"):
                app.enqueue("t", connection=auto)
            job = app.enqueue("t", {"at": "once"}, connection=auto, require_transaction=False)
        with psycopg.connect(conninfo) as conn:  # the connection dies under the caller's transaction
            conn.execute("SELECT 1")
            other = psycopg.connect(conninfo, autocommit=True)
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            other.close()
            with pytest.raises(CallerConnectionError, match="connection=") as info:
                app.enqueue("t", connection=conn)
            assert "reconnects by itself" not in info.value.message
        return job.id

    committed = await asyncio.to_thread(sync_rules)
    assert await store.get_job(committed) is not None  # autocommit + require_transaction=False: at once
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        with pytest.raises(CallerConnectionError, match="no transaction open"):
            await app.aenqueue("t", connection=conn)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(CallerConnectionError, match="autocommit"):
            await app.aenqueue("t", connection=conn)
    closed_async = await psycopg.AsyncConnection.connect(conninfo)
    await closed_async.close()
    with pytest.raises(CallerConnectionError, match="is closed"):
        await app.aenqueue("t", connection=closed_async)
    assert (await store.stats()).total == 1


async def test_notify_fires_only_when_the_callers_transaction_commits(url: str) -> None:
    waiter = PostgresStore(url)
    await waiter.open()
    conninfo, _ = backend_parse(url)
    try:
        await asyncio.wait_for(waiter.listening.wait(), 10)
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            async with conn.transaction(force_rollback=False):
                await waiter.aenqueue_on_connection(conn, [_new()])
                wait = asyncio.create_task(waiter.wait_for_jobs(10.0))
                await asyncio.sleep(0.5)
                assert not wait.done()  # not committed: no wake-up
            await asyncio.wait_for(wait, 5.0)
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            await waiter.aenqueue_on_connection(conn, [_new()], require_transaction=False)
            wait = asyncio.create_task(waiter.wait_for_jobs(10.0))
            await asyncio.sleep(0.5)
            assert not wait.done()  # not committed: no wake-up
            await conn.commit()
            await asyncio.wait_for(wait, 5.0)
    finally:
        await waiter.close()


async def test_sqlalchemy_session_through_the_app(url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    conninfo, _ = backend_parse(url)
    engine = sqlalchemy.create_engine(conninfo.replace("postgresql://", "postgresql+psycopg://", 1))
    app = Conveyor(url)
    await app.aopen()
    try:

        def scenario() -> tuple[str, str]:
            with Session(engine) as session:
                session.execute(sqlalchemy.text("SELECT 1"))
                kept = app.enqueue("task", {"via": "session"}, connection=session)
                session.commit()
            with engine.connect() as connection:
                with pytest.raises(CallerConnectionError, match="has not begun a transaction"):
                    app.enqueue("task", {"via": "connection"}, connection=connection)
                connection.begin()
                dropped = app.enqueue("task", {"via": "connection"}, connection=connection)
                connection.rollback()
            auto_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            with auto_engine.connect() as auto, pytest.raises(CallerConnectionError, match="AUTOCOMMIT"):
                app.enqueue("task", {"via": "autocommit"}, connection=auto)
            return kept.id, dropped.id

        kept, dropped = await asyncio.to_thread(scenario)
        assert await app.aget_job(kept) is not None
        assert await app.aget_job(dropped) is None
    finally:
        await app.aclose()
        engine.dispose()


async def test_sqlalchemy_async_session(store: PostgresStore, url: str) -> None:
    pytest.importorskip("sqlalchemy")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    conninfo, _ = backend_parse(url)
    engine = create_async_engine(conninfo.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(CallerConnectionError, match="has not begun a transaction"):
                await store.aenqueue_on_connection(session, [_new(payload="no transaction")])
            await session.begin()
            (kept,) = await store.aenqueue_on_connection(session, [_new(payload="async session")])
            await session.commit()
        async with AsyncSession(engine) as session, session.begin():
            (dropped,) = await store.aenqueue_on_connection(session, [_new(payload="rolled back")])
            await session.rollback()
    finally:
        await engine.dispose()
    assert await store.get_job(kept.id) is not None
    assert await store.get_job(dropped.id) is None


# ---- transactional handlers -------------------------------------------------------------------------------------


async def _side_table(store: PostgresStore) -> sql.Composed:
    table = sql.SQL("{}.effects").format(sql.Identifier(store.schema))
    async with await _server() as conn:
        await conn.execute(sql.SQL("CREATE TABLE {} (job_id text PRIMARY KEY)").format(table))
    return table


async def _effects(table: sql.Composed) -> list[str]:
    async with await _server() as conn:
        return [r[0] for r in await (await conn.execute(sql.SQL("SELECT job_id FROM {}").format(table))).fetchall()]


async def test_handler_writes_commit_with_the_completion(store: PostgresStore) -> None:
    table = await _side_table(store)
    await store.enqueue([_new()])
    (job,) = await store.claim("w", ["default"], 1, LEASE)
    async with store.handler_transaction(job) as tx:
        await tx.connection.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [job.id])
        assert await _effects(table) == []  # not visible before the commit
        assert await tx.finish(_done(job)) is True
    assert await _effects(table) == [job.id]
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.COMPLETED
    assert len(await store.attempts(job.id)) == 1


async def test_handler_that_raises_rolls_back_its_writes(store: PostgresStore) -> None:
    table = await _side_table(store)
    await store.enqueue([_new()])
    (job,) = await store.claim("w", ["default"], 1, LEASE)
    with pytest.raises(RuntimeError):
        async with store.handler_transaction(job) as tx:
            await tx.connection.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [job.id])
            raise RuntimeError("handler failed")
    assert await _effects(table) == []
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.PROCESSING  # the worker now reports the failure normally
    retry = Finish(job.lease, JobStatus.PENDING, run_at=utcnow(), error="handler failed")
    assert await store.finish([retry]) == [True]


async def test_handler_with_a_lost_lease_commits_nothing(store: PostgresStore) -> None:
    table = await _side_table(store)
    await store.enqueue([_new()])
    (job,) = await store.claim("w", ["default"], 1, timedelta(milliseconds=1))
    async with store.handler_transaction(job) as tx:
        await tx.connection.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [job.id])
        await asyncio.sleep(0.05)
        assert len(await store.rescue()) == 1  # another process gave the job back meanwhile
        assert await tx.finish(_done(job)) is False
    assert await _effects(table) == []
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.PENDING


async def test_transactional_task_through_the_worker(url: str) -> None:
    from conveyor.worker import Worker

    app = Conveyor(url)
    await app.aopen()
    store = app.store
    assert isinstance(store, PostgresStore)
    table = await _side_table(store)
    seen: list[str] = []

    @app.task("write", transactional=True)
    async def write(payload: Any, ctx: Any) -> str:
        await ctx.connection.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [ctx.job.id])
        if payload == "boom" and ctx.job.attempts == 1:
            raise RuntimeError("first try fails after writing")
        seen.append(ctx.job.id)
        return "ok"

    try:
        good = await app.aenqueue("write", "fine")
        bad = await app.aenqueue("write", "boom", max_attempts=3)
        worker = Worker(app, concurrency=2, install_signal_handlers=False)
        runner = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while True:
            jobs = [await app.aget_job(good.id), await app.aget_job(bad.id)]
            if all(j is not None and j.status is JobStatus.COMPLETED for j in jobs):
                break
            assert time.monotonic() < deadline, jobs
            await asyncio.sleep(0.1)
        worker.stop()
        await asyncio.wait_for(runner, 30)
        assert sorted(await _effects(table)) == sorted([good.id, bad.id])  # the failed try's write rolled back
        assert len(await app.aattempts(bad.id)) == 2
    finally:
        await app.aclose()


# ---- outages ----------------------------------------------------------------------------------------------------


async def test_lazy_open_while_the_database_is_down() -> None:
    url = f"postgresql://postgres@127.0.0.1:1/test?schema=cv_{uuid.uuid4().hex[:8]}"  # nothing listens on port 1
    store = PostgresStore(url, lazy=True, timeout=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await store.open()
    assert any("lazily" in str(w.message) for w in caught)
    try:
        with pytest.raises(StoreUnavailable, match="PostgreSQL is unavailable"):
            await store.enqueue([_new()])
        with pytest.raises(StoreUnavailable):
            await store.claim("w", ["default"], 1, LEASE)
    finally:
        await store.close()


async def test_strict_open_while_the_database_is_down_raises() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test?schema=cv_down", timeout=1.0)
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()


async def test_killed_pool_connections_are_replaced_transparently(store: PostgresStore) -> None:
    await store.enqueue([_new()])
    async with await _server() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = '' AND datname = 'test' AND pid <> pg_backend_pid() AND query LIKE %s",
            [f'%"{store.schema}"%'],
        )
    await asyncio.sleep(0.1)
    assert (await store.stats()).pending == 1  # retried once on a fresh connection


async def test_fast_worker_commits_stay_inside_their_own_statement(url: str) -> None:
    """The claim's `set_config(..., true)` lasts for its own implicit transaction: the pooled connection's session
    keeps synchronous_commit on, so enqueues and management calls stay durable."""
    for fast in (True, False):
        store = PostgresStore(url, max_size=1, fast_worker_commits=fast)
        await store.open()
        try:
            await store.enqueue([_new()])
            (job,) = await store.claim("w", ["default"], 1, LEASE)
            assert await store.finish([_done(job)]) == [True]

            async def setting(conn: psycopg.AsyncConnection[Any]) -> str:
                row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
                return str(row[0]) if row else ""

            assert await store._run(setting) == "on"
        finally:
            await store.close()


def test_url_parsing_strips_schema_and_keeps_libpq_parameters() -> None:
    from conveyor.store.postgres import parse_url

    conninfo, schema = parse_url(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?schema=app_jobs&options=-c%20statement_timeout%3D5000"
    )
    assert schema == "app_jobs"
    assert conninfo == "postgresql://postgres@127.0.0.1:5432/test?options=-c%20statement_timeout%3D5000"
    assert parse_url("postgres://u@h/db")[0] == "postgres://u@h/db"


async def test_drop_refuses_schemas_that_are_not_conveyors() -> None:
    """Never opened: nothing may be touched, whatever drop() does."""
    from conveyor.errors import ValidationError

    for schema in ("public", "pg_catalog", "information_schema"):
        with pytest.raises(ValidationError, match="not Conveyor's own"):
            await PostgresStore(f"{backend.SERVER_URL}?schema={schema}").drop(allow_default=True)
    with pytest.raises(ValidationError, match="default"):
        await PostgresStore(backend.SERVER_URL).drop()


# ---- keyset lists -----------------------------------------------------------------------------------------------


async def test_keyset_pages_seek_an_index_whatever_the_depth(store: PostgresStore) -> None:
    """A deep page costs what page 1 costs (issue 16): the keyset is a range of (created, id) — of (status,
    created, id) for a status filter, of (namespace, user_id, created, id) for a user's jobs — read in order, never
    a sort of every match."""
    from conveyor.model import JobFilter, JobKey, JobSort

    for start in range(0, 20_000, 5_000):
        await store.enqueue([_new(payload={"n": i}, user_id=f"u{i % 20}") for i in range(start, start + 5_000)])
    async with await _server() as conn:
        await conn.execute(sql.SQL("ANALYZE {}.jobs").format(sql.Identifier(store.schema)))
    for flt, index in (
        (JobFilter(), "jobs_created"),
        (JobFilter(status=JobStatus.PENDING), "jobs_"),
        (JobFilter(namespace="default", user_id="u3"), "jobs_user"),
    ):
        for sort in (JobSort.CREATED_DESC, JobSort.CREATED):
            deep = (await store.list_jobs(flt, 1, 900, sort=sort)).items[0]
            _, page_sql, params = store.list_statements(flt, JobKey.of(deep, sort), sort)
            async with await _server() as conn:
                query = "EXPLAIN (ANALYZE, COSTS OFF) " + page_sql
                rows = await (await conn.execute(query, {**params, "limit": 21, "offset": 0})).fetchall()  # type: ignore[arg-type]
            plan = "\n".join(r[0] for r in rows)
            assert "Index Scan" in plan and index in plan, plan
            assert "Sort" not in plan and "Seq Scan" not in plan, plan
