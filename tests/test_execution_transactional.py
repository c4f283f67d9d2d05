"""Transactional handlers (PostgreSQL): the handler's writes commit together with the job's completion, and vanish
with a failure (SPEC §2: exactly-once effects inside that database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from conveyor import Conveyor, JobContext, JobStatus
from tests.conformance.worker_support import running_worker, wait_status

pytestmark = pytest.mark.stores("postgresql")


@pytest.fixture
async def pg_app(store_url: str) -> AsyncIterator[tuple[Conveyor, str]]:
    app = Conveyor(store_url)
    await app.aopen()
    dsn = store_url.split("?", 1)[0]
    schema = store_url.split("schema=", 1)[1].split("&", 1)[0]
    table = f'"{schema}".effects'
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (job_id text primary key, note text)")
    try:
        yield app, table
    finally:
        await app.aclose()


async def rows(store_url: str, table: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(store_url.split("?", 1)[0]) as conn:
        cur = await conn.execute(f"SELECT job_id, note FROM {table} ORDER BY note")
        return list(await cur.fetchall())


async def test_writes_commit_with_the_completion_and_roll_back_on_failure(
    pg_app: tuple[Conveyor, str], store_url: str
) -> None:
    app, table = pg_app

    @app.task("record", transactional=True, max_attempts=1)
    async def record(payload: dict[str, Any], ctx: JobContext) -> str:
        assert ctx.connection is not None
        await ctx.connection.execute(
            f"INSERT INTO {table} (job_id, note) VALUES (%s, %s)", (ctx.job.id, payload["note"])
        )
        if payload.get("fail"):
            raise RuntimeError("changed my mind")
        return "recorded"

    ok = await app.aenqueue("record", {"note": "kept"})
    bad = await app.aenqueue("record", {"note": "rolled back", "fail": True})
    async with running_worker(app):
        done = await wait_status(app, ok.id, JobStatus.COMPLETED)
        failed = await wait_status(app, bad.id, JobStatus.FAILED)
    assert done.result == "recorded"
    assert failed.last_error == "RuntimeError: changed my mind"
    assert await rows(store_url, table) == [(ok.id, "kept")]
    assert [a.status_code for a in await app.aattempts(ok.id)] == [200]
    assert [a.status_code for a in await app.aattempts(bad.id)] == [500]


async def test_run_next_with_a_transactional_handler(pg_app: tuple[Conveyor, str], store_url: str) -> None:
    app, table = pg_app

    @app.task("record", transactional=True)
    async def record(payload: None, ctx: JobContext) -> str:
        await ctx.connection.execute(f"INSERT INTO {table} (job_id, note) VALUES (%s, 'run')", (ctx.job.id,))
        return "via run"

    job = await app.aenqueue("record", user_id="u1")
    result = await app.arun_next("default", "u1")
    assert result.job is not None and result.job.status is JobStatus.COMPLETED
    assert result.attempt is not None and result.attempt.result == "via run"
    assert result.is_last
    assert await rows(store_url, table) == [(job.id, "run")]
