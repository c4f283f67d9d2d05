"""Store conformance: `migrate()` behaves the same on every store (store/base.py "Migrations").

It may be called on a store that is not open and leaves nothing running behind it; it returns the labels of the
steps that *this call* applied (all of `known_migrations()` on an empty store, nothing when up to date — also right
after `open()`, which migrates); several processes starting at once apply each step exactly once between them; and a
store migrated by a newer Conveyor is refused with SchemaTooNew, by `migrate()` and `open()` alike.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import enqueue_one
from conveyor.errors import SchemaTooNew


def _threads() -> set[int]:
    """Threads now, less the event loop's executor threads (they belong to the loop, not to the store)."""
    return {t.ident or 0 for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def test_migrate_on_a_closed_empty_store_applies_every_step_and_leaves_nothing_running(
    store_harness: StoreHarness, store_url: str
) -> None:
    store = store_harness.open(store_url)
    before = _threads()
    applied = await store.migrate()
    assert applied == store.known_migrations()
    assert await store.migrate() == []
    assert _threads() <= before, "migrate() on a store that is not open left threads running"
    await store.open()
    try:
        assert await store.migrate() == []
        assert await enqueue_one(store)
    finally:
        await store.close()


async def test_open_migrates_so_a_later_migrate_has_nothing_to_do(store_harness: StoreHarness, store_url: str) -> None:
    store = store_harness.open(store_url)
    await store.open()
    try:
        assert await store.migrate() == []
    finally:
        await store.close()
    again = store_harness.open(store_url)
    assert await again.migrate() == []


@pytest.mark.processes
async def test_concurrent_starts_apply_each_step_exactly_once(store_harness: StoreHarness, store_url: str) -> None:
    stores = [store_harness.open(store_url) for _ in range(4)]
    results = await asyncio.gather(*(s.migrate() for s in stores))
    labels = [label for applied in results for label in applied]
    assert sorted(labels) == sorted(stores[0].known_migrations()), results
    for s in stores:
        await s.close()


async def test_a_store_migrated_by_a_newer_conveyor_is_refused(
    store_harness: StoreHarness, store_kind: str, store_url: str
) -> None:
    store = store_harness.open(store_url)
    await store.migrate()
    if store_harness.make_schema_newer is None:
        pytest.skip(f"{store_kind}: its StoreHarness has no make_schema_newer hook")
    if not await store_harness.make_schema_newer(store_url):
        pytest.skip(f"{store_kind} keeps no schema version")
    with pytest.raises(SchemaTooNew, match="newer"):
        await store_harness.open(store_url).migrate()
    fresh = store_harness.open(store_url)
    with pytest.raises(SchemaTooNew, match="Upgrade Conveyor"):
        await fresh.open()
    await fresh.close()
    await store.close()
