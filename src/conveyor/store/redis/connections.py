"""The Redis store's clients and how a call reaches Redis (see store.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conveyor.errors import (
    StoreUnavailable,
)
from conveyor.store.base import Store
from conveyor.store.redis.keys import Keys
from conveyor.store.redis.scripts import SCRIPTS, ScriptRunner, load_script
from conveyor.store.wake import LocalWaker

__all__ = ["CONFLICT_MESSAGE", "CONNECTION_ERRORS", "UNAVAILABLE", "RedisConnections"]

log = logging.getLogger("conveyor.store.redis")

UNAVAILABLE = "job queue service is unavailable: Redis is not connected"
"""The exact text of StoreUnavailable (the Go template's 503 message; the HTTP layer answers with it)."""

CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."

CONNECTION_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, OSError, asyncio.TimeoutError)


class RedisConnections(Store):
    """The Redis store's base: its clients (built lazily) and the one way every call reaches Redis (`_do`, `_run`),
    turning connection failures into StoreUnavailable. The store (store.py) sets these in its constructor."""

    url: str
    prefix: str
    options: dict[str, Any]
    _redis_url: str
    _socket_timeout: float
    _client: aioredis.Redis | None
    _scripts: ScriptRunner | None
    _closed: bool
    keys: Keys
    _waker: LocalWaker

    def _connect(self) -> aioredis.Redis:
        """Build the clients (no I/O yet). One retry without back-off replaces a pooled connection that died with
        a Redis restart; a Redis that stays down fails fast instead of hanging the caller."""
        if self._client is None:
            common: dict[str, Any] = {
                "decode_responses": True,
                "socket_connect_timeout": self._socket_timeout,
                "retry": Retry(NoBackoff(), 1),
                "health_check_interval": 10,
            }
            max_connections: int | None = self.options.get("max_connections")
            if max_connections is not None:
                common["max_connections"] = max_connections
            self._client = aioredis.Redis.from_url(self._redis_url, socket_timeout=self._socket_timeout, **common)
            self._scripts = ScriptRunner(
                self._redis_url,
                {name: load_script(name) for name in SCRIPTS},
                timeout=self._socket_timeout,
                connect_timeout=self._socket_timeout,
                max_connections=max_connections,
            )
        return self._client

    async def _do(self, fn: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        """Run one Redis operation, turning every connection failure into StoreUnavailable."""
        if self._closed and self._client is None:
            raise StoreUnavailable(UNAVAILABLE)
        client = self._connect()
        try:
            return await fn(client)
        except CONNECTION_ERRORS as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        except rexc.ResponseError as exc:
            text = str(exc)
            if text.startswith(("MISCONF", "LOADING", "READONLY", "MASTERDOWN")):
                raise StoreUnavailable(UNAVAILABLE) from exc
            raise

    async def _run(self, name: str, args: Sequence[Any]) -> Any:
        """Run one transition script (scripts.py: on the store's own connections, not the client's pool)."""
        script_args = [self.prefix, *args]

        async def call(_: aioredis.Redis) -> Any:
            assert self._scripts is not None
            return await self._scripts.run(name, script_args)

        return await self._do(call)
