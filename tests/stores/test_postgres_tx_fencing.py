"""PostgreSQL: a transactional handler's finish is fenced like any other (the conformance suite's fencing tests,
conveyor/conformance/test_store_fencing.py, with the handler writing through the store's own connection)."""

from __future__ import annotations

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import attempt, lose_the_claim
from conveyor.model import AttemptOutcome, Finish, JobStatus
from conveyor.store import Store

pytestmark = pytest.mark.stores("postgresql")


async def test_a_transactional_handlers_finish_is_fenced_too(
    store: Store, store_harness: StoreHarness, store_url: str
) -> None:
    """The handler's writes commit with the completion only under the claim's own token; a stale one rolls them
    back, and the try is still kept as a LOST record."""
    a, b = await lose_the_claim("crash", store, store_harness, store_url)
    schema = getattr(store, "schema")  # noqa: B009 - PostgresStore's schema: the handler writes into its kv table
    async with store.handler_transaction(a) as tx:
        await tx.connection.execute(f'INSERT INTO "{schema}".kv (key, value) VALUES (%s, %s)', ("written-by-a", "x"))
        finished = await tx.finish(Finish(a.lease, JobStatus.COMPLETED, attempt=attempt(a, result=1), result=1))
    assert finished is False
    assert await store.kv_get("written-by-a") is None  # rolled back with the refused completion
    now = await store.get_job(b.id)
    assert now is not None and now.status is JobStatus.PROCESSING and now.lease_token == b.lease_token
    (lost,) = await store.attempts(a.id)
    assert lost.lease_token == a.lease_token and lost.outcome is AttemptOutcome.LOST
    async with store.handler_transaction(b) as tx:
        await tx.connection.execute(f'INSERT INTO "{schema}".kv (key, value) VALUES (%s, %s)', ("written-by-b", "y"))
        assert await tx.finish(Finish(b.lease, JobStatus.COMPLETED, attempt=attempt(b, result=2), result=2))
    assert await store.kv_get("written-by-b") == "y"
