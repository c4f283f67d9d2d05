"""Store selection: one URL decides the backend (SPEC §4: sqlite:///path, postgresql://…, redis://…)."""

from __future__ import annotations

from typing import Any

from conveyor.errors import UnsupportedURL
from conveyor.store.base import HandlerTransaction, Store

__all__ = ["DEFAULT_URL", "HandlerTransaction", "Store", "open_store"]

DEFAULT_URL = "sqlite:///conveyor.db"


def open_store(url: str | None = None, **options: Any) -> Store:
    """Build (not yet open) the store for a URL. Imports each backend lazily so unused drivers are optional."""
    url = url or DEFAULT_URL
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from conveyor.store.memory import MemoryStore

        return MemoryStore(url, **options)
    if scheme == "sqlite":
        from conveyor.store.sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if scheme in ("postgresql", "postgres"):
        from conveyor.store.postgres import PostgresStore

        return PostgresStore(url, **options)
    if scheme in ("redis", "rediss"):
        from conveyor.store.redis import RedisStore

        return RedisStore(url, **options)
    raise UnsupportedURL(url)
