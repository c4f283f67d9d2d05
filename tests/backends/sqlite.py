"""SQLite backend for the shared fixtures: every test gets its own database file under pytest's tmp_path."""

from __future__ import annotations

from pathlib import Path

from conveyor.store import open_store
from tests.backends import isolated

BASE = "sqlite://"


def fresh_url(tmp_path: Path) -> str:
    return isolated(BASE, tmp_path)  # an absolute path under tmp_path: sqlite:////abs/…


async def cleanup(url: str) -> None:
    await open_store(url).drop()


async def make_schema_newer(url: str) -> bool:
    """Record a migration this code does not know, as a newer Conveyor would have."""
    import sqlite3

    from conveyor.store.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(url)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO conveyor_schema_migrations (version, name, applied_at) VALUES (9999, 'from_the_future', 0)"
        )
    return True


async def snapshot(url: str) -> object:
    """A copy of the whole database as committed now (see `restore`)."""
    import sqlite3

    from conveyor.store.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(url)
    copy = sqlite3.connect(":memory:")
    source = sqlite3.connect(path)
    try:
        source.backup(copy)
    finally:
        source.close()
    return copy


async def restore(url: str, snap: object) -> None:
    """Write the copy back over the live database (SQLite's backup API, under its locks): every commit made since
    `snapshot` is gone, as after a crash that lost them (e.g. `synchronous=OFF` and a power cut)."""
    import sqlite3

    from conveyor.store.sqlite import parse_sqlite_url

    assert isinstance(snap, sqlite3.Connection)
    path, _ = parse_sqlite_url(url)
    target = sqlite3.connect(path, timeout=30)
    try:
        snap.backup(target)
    finally:
        target.close()
