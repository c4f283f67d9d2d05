"""The database file on disk: deleting a space (the file, its -wal/-shm/-journal files, its wake-up directory),
or only Conveyor's tables when the file is shared with the application."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TypeVar

from conveyor.errors import (
    StoreUnavailable,
)
from conveyor.store.sqlite import queries as q
from conveyor.store.sqlite.wake import remove_wake_directory

__all__ = ["drop_files", "drop_tables_if_shared"]

log = logging.getLogger("conveyor.store.sqlite")

T = TypeVar("T")


def drop_files(path: str, busy_timeout: float) -> None:
    """`drop()` off the event loop: Conveyor's tables only, from a file shared with the application; otherwise the
    file with its -wal, -shm and -journal files and its wake directory."""
    if os.path.exists(path) and drop_tables_if_shared(path, busy_timeout):
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    remove_wake_directory(os.path.realpath(path))


def drop_tables_if_shared(path: str, busy_timeout: float) -> bool:
    """When the file holds tables that are not Conveyor's (the application's own), drop Conveyor's tables from it
    in one transaction and answer True (the file stays); otherwise change nothing and answer False."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite database {path} to drop it: {exc}") from exc
    try:
        if not conn.execute(q.FOREIGN_TABLES).fetchall():
            return False
        conn.execute("BEGIN IMMEDIATE")
        for (table,) in conn.execute(q.CONVEYOR_TABLES).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute("COMMIT")
        return True
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            return False  # not a database at all: nothing of anyone's to keep
        raise StoreUnavailable(f"cannot drop Conveyor's tables from SQLite database {path}: {exc}") from exc
    finally:
        conn.close()
