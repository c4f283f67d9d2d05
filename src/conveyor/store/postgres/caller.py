"""The caller's own connection (transactional enqueue, `enqueue_on_connection`): the rules it must meet, the error a
driver failure on it becomes, and the psycopg connection inside an SQLAlchemy async session."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from conveyor.errors import REQUIRE_TRANSACTION_HINT, CallerConnectionError

__all__ = ["caller_failed", "check_caller", "unwrap_async"]


def check_caller(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], require_transaction: bool) -> None:
    """The rules of Store.enqueue_on_connection for a psycopg connection (sync or async: the same attributes)."""
    if connection.closed or connection.broken:
        raise CallerConnectionError(
            "the connection passed as connection= is closed; open a new one, begin a transaction on it and enqueue "
            "inside it (Conveyor cannot reopen a connection it does not own)"
        )
    status = connection.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise CallerConnectionError(
            "the transaction of the connection passed as connection= has already failed (an earlier statement "
            "raised); roll it back, then redo your work and the enqueue in a new transaction"
        )
    if status == TransactionStatus.ACTIVE:
        raise CallerConnectionError(
            "the connection passed as connection= is busy with another statement (e.g. a COPY or an unread "
            "result); finish it first"
        )
    if require_transaction and (connection.autocommit or status == TransactionStatus.IDLE):
        state = "is in autocommit mode" if connection.autocommit else "has no transaction open"
        raise CallerConnectionError(
            f"the connection passed as connection= {state}, so the jobs would not commit with your work; "
            + REQUIRE_TRANSACTION_HINT
        )


def caller_failed(exc: psycopg.Error) -> CallerConnectionError:
    """A driver error on the caller's connection: the caller's transaction is now failed or the connection gone."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CallerConnectionError(
        f"enqueue on the connection passed as connection= failed ({type(exc).__name__}: {detail}); your "
        "transaction cannot commit now: roll it back (or reconnect, if the connection was lost) and redo your "
        "work with the enqueue"
    )


async def unwrap_async(connection: Any) -> Any:
    """Reach the psycopg AsyncConnection inside an SQLAlchemy AsyncSession / AsyncConnection (same transaction)."""
    if not type(connection).__module__.startswith("sqlalchemy"):
        return connection
    if hasattr(connection, "get_raw_connection"):  # AsyncConnection
        raw = await connection.get_raw_connection()
    else:  # AsyncSession: its connection inside the current transaction
        raw = await (await connection.connection()).get_raw_connection()
    return getattr(raw, "driver_connection", raw)
