"""The connection pool and the one way every call reaches it (`_run`): driver errors become StoreUnavailable, and a
call that failed on a connection that died since its last use is retried once on a fresh one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from conveyor.errors import StoreUnavailable
from conveyor.store.base import Store
from conveyor.store.postgres.statements import Queries

__all__ = ["DRIVER_ERRORS", "PgConnections"]

logger = logging.getLogger("conveyor.store.postgres")

DRIVER_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, PoolClosed)
T = TypeVar("T")


class PgConnections(Store):
    """The PostgreSQL store's base: its pool, its filled-in statements and how a call runs on a connection. The
    store (store.py) sets these in its constructor; enqueue.py and handoff.py build on them."""

    conninfo: str
    schema: str
    options: dict[str, Any]
    _q: Queries
    _timeout: float
    _pool: AsyncConnectionPool | None
    _closed: bool
    _migrated: bool

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "options=" not in urlsplit(self.conninfo).query:
            kwargs["options"] = "-c TimeZone=UTC"
        kwargs.update(self.options)
        return kwargs

    def unavailable_error(self, exc: BaseException) -> StoreUnavailable:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(
            f"PostgreSQL is unavailable ({detail}). Conveyor reconnects by itself; retry the call later."
        )

    async def _ready(self) -> AsyncConnectionPool:
        """The pool, with migrations applied (a lazily opened store migrates on first use)."""
        pool = self._pool
        if pool is None:
            if self._closed:
                raise StoreUnavailable("the PostgreSQL store is closed")
            await self.open()
            pool = self._pool
            assert pool is not None
        if not self._migrated:
            await self.migrate()
        return pool

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, retry: bool = True) -> T:
        """Run `fn` on a pooled connection, mapping driver errors to StoreUnavailable.

        A pooled connection may have died since it was last used (a database restart): the first failure makes
        the pool check its idle connections, and the call is retried once on a fresh connection."""
        pool = await self._ready()
        for attempt in (1, 2):
            try:
                async with pool.connection(timeout=self._timeout) as conn:
                    return await fn(conn)
            except DRIVER_ERRORS as exc:
                if attempt == 1 and retry and not isinstance(exc, PoolTimeout | PoolClosed):
                    logger.warning("PostgreSQL connection lost (%s); checking the pool and retrying once", exc)
                    try:
                        await pool.check()
                    except Exception:  # the check itself may fail while the server is down
                        pass
                    continue
                raise self.unavailable_error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _one(self, query: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        async def go(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, params)).fetchone()  # type: ignore[arg-type]

        return await self._run(go)

    async def _all(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        async def go(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]

        return await self._run(go)
