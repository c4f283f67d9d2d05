"""Store selection: one URL decides the backend (SPEC §4: sqlite:///path, postgresql://…, redis://…)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.errors import UnsupportedURL
from conveyor.store.base import DEFAULT_SPACE, HandlerTransaction, Store, check_label

__all__ = ["DEFAULT_SPACE", "DEFAULT_URL", "HandlerTransaction", "Store", "isolated_url", "open_store", "store_class"]

DEFAULT_URL = "sqlite:///conveyor.db"

_BUILTIN = {
    "memory": "conveyor.store.memory:MemoryStore",
    "sqlite": "conveyor.store.sqlite:SQLiteStore",
    "postgresql": "conveyor.store.postgres:PostgresStore",
    "postgres": "conveyor.store.postgres:PostgresStore",
    "redis": "conveyor.store.redis:RedisStore",
    "rediss": "conveyor.store.redis:RedisStore",
}
"""URL scheme → store class. Each backend's module is imported only when its scheme is used, so the drivers of
unused stores are optional."""


def store_class(url: str) -> type[Store]:
    """The Store class serving a URL's scheme (imported on first use)."""
    scheme = url.split(":", 1)[0].lower()
    target = _BUILTIN.get(scheme)
    if target is None:
        raise UnsupportedURL(url)
    module, _, name = target.partition(":")
    cls: type[Store] = getattr(importlib.import_module(module), name)
    return cls


def open_store(url: str | None = None, **options: Any) -> Store:
    """Build (not yet open) the store for a URL. Imports each backend lazily so unused drivers are optional."""
    url = url or DEFAULT_URL
    factory: Callable[..., Store] = store_class(url)  # every store takes (url, *, lazy=False, **options)
    return factory(url, **options)


def isolated_url(base_url: str, label: str, workdir: Path) -> str:
    """A URL naming a fresh, separate space of `base_url`'s store (`Store.isolated_url`): a PostgreSQL schema, a
    Redis key prefix, a SQLite file in `workdir`, a named memory data set. `open_store(url).drop()` deletes it."""
    check_label(label)
    return store_class(base_url).isolated_url(base_url, label, workdir)
