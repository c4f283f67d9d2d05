"""PostgreSQL test backend: each test gets its own schema on the shared server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from conveyor.store import open_store
from tests.backends import isolated

SERVER_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASE = SERVER_URL


def fresh_url(tmp_path: Path) -> str:
    return isolated(BASE, tmp_path)


def schema_of(url: str) -> str:
    from conveyor.store.postgres import parse_url

    return parse_url(url)[1]


async def cleanup(url: str) -> None:
    await open_store(url).drop()


async def make_schema_newer(url: str) -> bool:
    """Record a migration this code does not know, as a newer Conveyor would have."""
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("INSERT INTO {} (version, name) VALUES (9999, '9999_from_the_future')").format(
                sql.Identifier(schema_of(url), "schema_migrations")
            )
        )
    return True


_SNAPSHOT_TABLES = ("jobs", "attempts")


async def snapshot(url: str) -> object:
    """Copies of the job and attempt tables as committed now, kept in the test's schema (see `restore`)."""
    schema = schema_of(url)
    name = f"snap_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        for table in _SNAPSHOT_TABLES:
            await conn.execute(
                sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                    sql.Identifier(schema, f"{name}_{table}"), sql.Identifier(schema, table)
                )
            )
    return name


async def restore(url: str, snap: object) -> None:
    """Put the jobs and attempts back as `snapshot` saw them, in one transaction: every change committed since is
    gone, as after `pg_ctl restart -m immediate` lost commits made with synchronous_commit off."""
    schema = schema_of(url)
    assert isinstance(snap, str)
    async with await psycopg.AsyncConnection.connect(SERVER_URL) as conn, conn.transaction():
        for table in _SNAPSHOT_TABLES:
            await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)))
            await conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                    sql.Identifier(schema, table), sql.Identifier(schema, f"{snap}_{table}")
                )
            )
