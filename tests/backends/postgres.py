"""The PostgreSQL store's test backend (see tests/backends/__init__.py): each test gets its own schema."""

from __future__ import annotations

from tests.backends import Backend

_backend = Backend("postgresql")
BASE = SERVER_URL = _backend.BASE
fresh_url = _backend.fresh_url
cleanup = _backend.cleanup


def schema_of(url: str) -> str:
    """The schema an isolated URL names."""
    from conveyor.store.postgres import parse_url

    return parse_url(url)[1]
