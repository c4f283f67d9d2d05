"""The memory store's test backend (see tests/backends/__init__.py)."""

from __future__ import annotations

from tests.backends import Backend

_backend = Backend("memory")
BASE = _backend.BASE
fresh_url = _backend.fresh_url
cleanup = _backend.cleanup
