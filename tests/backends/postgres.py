"""PostgreSQL test backend: each test gets its own schema on the shared server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

SERVER_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_url(tmp_path: Path) -> str:
    return f"{SERVER_URL}?schema=cv_{uuid.uuid4().hex[:16]}"


def schema_of(url: str) -> str:
    from conveyor.store.postgres import parse_url

    return parse_url(url)[1]


async def cleanup(url: str) -> None:
    schema = schema_of(url)
    if not schema.startswith("cv_"):  # never drop anything a test did not create
        return
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
