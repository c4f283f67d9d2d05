"""SQLite backend for the shared fixtures: every test gets its own database file under pytest's tmp_path."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fresh_url(tmp_path: Path) -> str:
    path = (tmp_path / f"conveyor-{uuid.uuid4().hex[:12]}.db").resolve()
    return f"sqlite:///{path}"  # path is absolute, so this is sqlite:////abs/…


async def cleanup(url: str) -> None:
    from conveyor.store.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(url)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


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
