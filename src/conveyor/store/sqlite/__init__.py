"""The SQLite store (the embedded default): `SQLiteStore("sqlite:///conveyor.db")`.

`store.py` holds the store, `queries.py` every SQL statement, `migrations.py` the versioned schema,
`runner.py` the connection threads that keep SQLite off the event loop and `wake.py` the wake-ups of waiting
workers, in this process and in others on the same file (docs/sqlite.md).
"""

from conveyor.store.sqlite.store import SQLiteStore, parse_sqlite_url

__all__ = ["SQLiteStore", "parse_sqlite_url"]
