"""The SQLite store (the embedded default): `SQLiteStore("sqlite:///conveyor.db")`.

`store.py` holds the store, `queries.py` every SQL statement, `migrations.py` the versioned schema and
`runner.py` the connection threads that keep SQLite off the event loop.
"""

from conveyor.store.sqlite.store import SQLiteStore, parse_sqlite_url

__all__ = ["SQLiteStore", "parse_sqlite_url"]
