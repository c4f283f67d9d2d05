"""The rules for a caller's own connection (`enqueue(..., connection=...)`) that hold above any one driver.

Store.enqueue_on_connection (store/base.py) states them; each store checks its driver's connection. SQLAlchemy
wraps the drivers and keeps its own transaction — begun before the driver's, which starts only with the first
statement — so an SQLAlchemy object is checked here, at its own level, by the app and by the stores that unwrap
one themselves.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import REQUIRE_TRANSACTION_HINT, CallerConnectionError


def check_sqlalchemy(connection: Any, require_transaction: bool) -> bool:
    """The caller-connection rules (store/base.py, enqueue_on_connection) at SQLAlchemy's level, where its own
    transaction is known (the driver's may not have begun yet). True when `connection` is an SQLAlchemy object
    and was checked, so the store need not look at the driver's state."""
    if not type(connection).__module__.startswith("sqlalchemy"):
        return False
    if getattr(connection, "closed", False) or getattr(connection, "invalidated", False):
        raise CallerConnectionError(
            f"the SQLAlchemy {type(connection).__name__} passed as connection= is closed; enqueue inside an open "
            "transaction"
        )
    if require_transaction:
        in_transaction = getattr(connection, "in_transaction", None)
        autocommit = False
        get_options = getattr(connection, "get_execution_options", None)
        if callable(get_options):
            autocommit = get_options().get("isolation_level") == "AUTOCOMMIT"
        if autocommit or (callable(in_transaction) and not in_transaction()):
            state = "is in AUTOCOMMIT mode" if autocommit else "has not begun a transaction"
            raise CallerConnectionError(
                f"the SQLAlchemy {type(connection).__name__} passed as connection= {state}, so the jobs would not "
                "commit with your work; " + REQUIRE_TRANSACTION_HINT
            )
    return True
