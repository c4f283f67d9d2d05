"""Store conformance: `kv_setdefault`, the one atomic primitive behind every replay-once protocol (HTTP
Idempotency-Key, GS2's duplication avoider): put a value only when none is live, and answer the value in place and
whether this call put it, in one step (store/base.py "One idempotency primitive")."""

from __future__ import annotations

import asyncio

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import eventually
from conveyor.store import Store


async def test_setdefault_puts_an_absent_value_and_keeps_a_present_one(store: Store) -> None:
    assert await store.kv_setdefault("k", "first") == ("first", True)
    assert await store.kv_setdefault("k", "second") == ("first", False)
    assert await store.kv_get("k") == "first"
    await store.kv_set("k", "replaced")
    assert await store.kv_setdefault("k", "third") == ("replaced", False)
    await store.kv_delete("k")
    assert await store.kv_setdefault("k", "fourth ü") == ("fourth ü", True)


async def test_an_expired_value_counts_as_absent(store: Store) -> None:
    assert await store.kv_setdefault("lease", "a", ttl=0.3) == ("a", True)
    assert await store.kv_setdefault("lease", "b", ttl=0.3) == ("a", False)

    async def taken_again() -> bool:
        value, created = await store.kv_setdefault("lease", "c", ttl=60)
        assert value in ("a", "c") and created == (value == "c")
        return created

    await eventually(taken_again, what="the first value to expire")
    assert await store.kv_get("lease") == "c"


async def test_a_live_value_keeps_its_own_expiry(store: Store) -> None:
    await store.kv_setdefault("short", "x", ttl=0.3)
    assert await store.kv_setdefault("short", "y", ttl=600) == ("x", False)  # does not extend "x"
    await store.kv_setdefault("forever", "z")

    async def short_gone() -> bool:
        return await store.kv_get("short") is None

    await eventually(short_gone, what="the short value to expire")
    assert await store.kv_setdefault("forever", "w", ttl=0.1) == ("z", False)
    assert await store.kv_get("forever") == "z"


async def test_of_concurrent_setdefaults_exactly_one_puts_and_all_see_its_value(
    store_harness: StoreHarness, store_url: str
) -> None:
    stores = [store_harness.open(store_url) for _ in range(5)]
    for s in stores:
        await s.open()
    try:
        results = await asyncio.gather(*(stores[i % 5].kv_setdefault("once", f"writer {i}", ttl=60) for i in range(10)))
        created = [value for value, put in results if put]
        assert len(created) == 1, results
        assert {value for value, _ in results} == set(created)
        assert await stores[0].kv_get("once") == created[0]
    finally:
        for s in stores:
            await s.close()
