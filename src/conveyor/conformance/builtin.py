"""The optional harness hooks (`StoreHarness.snapshot`/`restore`/`make_schema_newer`) of Conveyor's own four stores.

They reach under the Store API on purpose — a crash that loses commits and a schema written by a newer release
cannot be made through it — so they live here, beside the suite, and nowhere in the stores. Each imports its
driver only when called.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HOOKS", "Hooks"]


@dataclass(frozen=True)
class Hooks:
    snapshot: Callable[[str], Awaitable[object]]
    restore: Callable[[str, object], Awaitable[None]]
    make_schema_newer: Callable[[str], Awaitable[bool]]


# ---- memory ---------------------------------------------------------------------------------------------------------

_MEMORY_STATE = (
    "jobs",
    "attempts",
    "pending",
    "processing",
    "lane_pending",
    "lane_processing",
    "unique",
    "uniq",
    "uniq_of",
    "counts",
    "namespaces",
    "queue_settings",
    "workers",
    "kv",
)


def _memory_data(url: str) -> Any:
    from conveyor.store.memory import MemoryStore

    data = MemoryStore.shared_data(url)
    if data is None:
        raise LookupError(f"no memory store has opened {url!r} in this process")
    return data


async def _memory_snapshot(url: str) -> object:
    """Everything the data set named by `url` holds now (see `_memory_restore`)."""
    data = _memory_data(url)
    with data.lock:
        return {name: copy.deepcopy(getattr(data, name)) for name in _MEMORY_STATE}


async def _memory_restore(url: str, snap: object) -> None:
    """Put the data set back exactly as the snapshot saw it: what a crash that lost every later write leaves."""
    data = _memory_data(url)
    assert isinstance(snap, dict)
    with data.lock:
        for name in _MEMORY_STATE:
            setattr(data, name, copy.deepcopy(snap[name]))


async def _memory_schema_newer(url: str) -> bool:
    """The memory store has no schema to be newer than this code."""
    return False


# ---- SQLite ---------------------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    from conveyor.store.sqlite import parse_sqlite_url

    return parse_sqlite_url(url)[0]


async def _sqlite_snapshot(url: str) -> object:
    """A copy of the whole database as committed now (SQLite's backup API)."""
    import sqlite3

    snap = sqlite3.connect(":memory:", check_same_thread=False)
    source = sqlite3.connect(_sqlite_path(url))
    try:
        source.backup(snap)
    finally:
        source.close()
    return snap


async def _sqlite_restore(url: str, snap: object) -> None:
    """Write the copy back over the live database, under SQLite's locks: every commit made since is gone, as after
    a crash that lost them (e.g. `synchronous=OFF` and a power cut)."""
    import sqlite3

    assert isinstance(snap, sqlite3.Connection)
    target = sqlite3.connect(_sqlite_path(url), timeout=30)
    try:
        snap.backup(target)
    finally:
        target.close()


async def _sqlite_schema_newer(url: str) -> bool:
    """Record a migration this code does not know, as a newer Conveyor would have."""
    import sqlite3

    with sqlite3.connect(_sqlite_path(url)) as conn:
        conn.execute(
            "INSERT INTO conveyor_schema_migrations (version, name, applied_at) VALUES (9999, 'from_the_future', 0)"
        )
    return True


# ---- PostgreSQL -----------------------------------------------------------------------------------------------------

_PG_TABLES = ("jobs", "attempts")


def _pg_server_and_schema(url: str) -> tuple[str, str]:
    from conveyor.store.postgres import parse_url

    return parse_url(url)


async def _pg_snapshot(url: str) -> object:
    """Copies of the job and attempt tables as committed now, kept in the space's own schema."""
    import psycopg
    from psycopg import sql

    server, schema = _pg_server_and_schema(url)
    name = f"snap_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        for table in _PG_TABLES:
            await conn.execute(
                sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                    sql.Identifier(schema, f"{name}_{table}"), sql.Identifier(schema, table)
                )
            )
    return name


async def _pg_restore(url: str, snap: object) -> None:
    """Put the jobs and attempts back as the snapshot saw them, in one transaction: every change committed since
    is gone, as after `pg_ctl restart -m immediate` lost commits made with synchronous_commit off."""
    import psycopg
    from psycopg import sql

    server, schema = _pg_server_and_schema(url)
    assert isinstance(snap, str)
    async with await psycopg.AsyncConnection.connect(server) as conn, conn.transaction():
        for table in _PG_TABLES:
            await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)))
            await conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                    sql.Identifier(schema, table), sql.Identifier(schema, f"{snap}_{table}")
                )
            )


async def _pg_schema_newer(url: str) -> bool:
    """Record a migration this code does not know, as a newer Conveyor would have."""
    import psycopg
    from psycopg import sql

    server, schema = _pg_server_and_schema(url)
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("INSERT INTO {} (version, name) VALUES (9999, '9999_from_the_future')").format(
                sql.Identifier(schema, "schema_migrations")
            )
        )
    return True


# ---- Redis ----------------------------------------------------------------------------------------------------------


async def _redis_snapshot(url: str) -> object:
    """Every key under the URL's prefix, DUMPed with its time to live."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.url import split_url

    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        saved: list[tuple[bytes, bytes, int]] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            dumped = await client.dump(key)
            if dumped is not None:
                saved.append((key, dumped, max(0, await client.pttl(key))))
        return saved
    finally:
        await client.aclose()


async def _redis_restore(url: str, snap: object) -> None:
    """Replace every key under the prefix with the snapshot's, in one MULTI/EXEC: what a restart that lost every
    later write (appendfsync everysec, a kill -9) leaves behind."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.url import split_url

    assert isinstance(snap, list)
    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        pipe = client.pipeline(transaction=True)
        if keys:
            pipe.delete(*keys)
        for key, dumped, ttl in snap:
            pipe.restore(key, ttl, dumped, replace=True)
        await pipe.execute()
    finally:
        await client.aclose()


async def _redis_schema_newer(url: str) -> bool:
    """Record a key layout newer than this code knows, as a newer Conveyor would have."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.url import split_url

    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        await client.hset(f"{prefix}:meta", "schema", "99")
    finally:
        await client.aclose()
    return True


HOOKS = {
    "memory": Hooks(_memory_snapshot, _memory_restore, _memory_schema_newer),
    "sqlite": Hooks(_sqlite_snapshot, _sqlite_restore, _sqlite_schema_newer),
    "postgresql": Hooks(_pg_snapshot, _pg_restore, _pg_schema_newer),
    "redis": Hooks(_redis_snapshot, _redis_restore, _redis_schema_newer),
}
"""Built-in store name → its hooks."""
