"""Store conformance: wake-ups (store/base.py: "Wake-ups") and store lifecycle basics.

Bounds are generous on purpose (the machine runs several suites at once): a waiter woken by a local enqueue must
return well before its timeout, which is far longer than any plausible wake-up delay.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import enqueue_one, new
from conveyor.model import JobFilter
from conveyor.store import Store

WAIT = 20.0  # the waiter's timeout: returning much sooner proves it was woken
SETTLE = 0.3  # time for a waiter (and a store's listener) to be in place before the enqueue under test


async def _time_wait(store: Store, timeout: float) -> float:
    start = time.monotonic()
    await store.wait_for_jobs(timeout)
    return time.monotonic() - start


async def test_wait_returns_soon_after_a_local_enqueue(store: Store) -> None:
    waiter = asyncio.create_task(_time_wait(store, WAIT))
    await asyncio.sleep(0.05)  # let the waiter start waiting
    enqueued = time.monotonic()
    await enqueue_one(store)
    elapsed = await asyncio.wait_for(waiter, WAIT + 5)
    assert elapsed < WAIT / 2
    assert time.monotonic() - enqueued < 3.0


async def test_wait_returns_after_its_timeout_when_nothing_happens(store: Store) -> None:
    elapsed = await asyncio.wait_for(_time_wait(store, 0.2), 10)
    assert elapsed < 5.0  # spurious early returns are allowed; hanging is not


async def test_every_waiter_is_woken(store: Store) -> None:
    waiters = [asyncio.create_task(_time_wait(store, WAIT)) for _ in range(3)]
    await asyncio.sleep(0.05)
    await store.enqueue([new(), new()])
    elapsed = await asyncio.wait_for(asyncio.gather(*waiters), WAIT + 5)
    assert max(elapsed) < WAIT / 2


async def test_an_enqueue_through_another_store_object_wakes_waiters(
    store_harness: StoreHarness, store: Store, store_url: str
) -> None:
    other = store_harness.open(store_url)
    await other.open()
    try:
        waiter = asyncio.create_task(_time_wait(store, WAIT))
        await asyncio.sleep(SETTLE)
        job = await enqueue_one(other)
        elapsed = await asyncio.wait_for(waiter, WAIT + 5)
        assert elapsed < WAIT / 2
        assert await store.get_job(job.id) is not None  # and the two objects see one data set
    finally:
        await other.close()


async def test_close_wakes_waiters(store_harness: StoreHarness, store_url: str) -> None:
    s = store_harness.open(store_url)
    await s.open()
    waiter = asyncio.create_task(_time_wait(s, WAIT))
    await asyncio.sleep(0.05)
    await s.close()
    elapsed = await asyncio.wait_for(waiter, WAIT + 5)
    assert elapsed < WAIT / 2


async def test_open_and_close_are_idempotent_and_migrate_is_up_to_date(
    store_harness: StoreHarness, store_url: str
) -> None:
    s = store_harness.open(store_url)
    await s.open()
    await s.open()
    try:
        assert await s.migrate() == []
        await s.ping()
        assert (await s.list_jobs(JobFilter())).total == 0
    finally:
        await s.close()
        await s.close()


async def test_data_survives_reopening_the_same_url(store_harness: StoreHarness, store_url: str) -> None:
    first = store_harness.open(store_url)
    await first.open()
    job = await enqueue_one(first, "t", {"kept": True})
    await first.close()
    second = store_harness.open(store_url)
    await second.open()
    try:
        got = await second.get_job(job.id)
        assert got is not None and got.payload == {"kept": True}
    finally:
        await second.close()


_ENQUEUE_ELSEWHERE = """
import asyncio, sys
from conveyor.model import NewJob
from conveyor.conformance import load_harness

async def main() -> None:
    store = load_harness(sys.argv[2]).open(sys.argv[1])
    await store.open()
    try:
        await store.enqueue([NewJob.build("from-another-process")])
    finally:
        await store.close()

asyncio.run(main())
"""


@pytest.mark.processes
async def test_an_enqueue_in_another_process_wakes_waiters(
    store: Store, store_url: str, store_harness: StoreHarness
) -> None:
    """Every store that other processes can open wakes their waiters: PostgreSQL by NOTIFY, Redis by its wake
    lists, SQLite by datagrams beside the database file (docs/sqlite.md)."""
    # A store may end the first waits after it starts listening early (SQLite: until senders have surely seen
    # its socket); spurious returns are allowed, so let them pass before timing the wait that matters.
    await _time_wait(store, 0.3)
    waiter = asyncio.create_task(_time_wait(store, WAIT))
    await asyncio.sleep(SETTLE)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _ENQUEUE_ELSEWHERE, store_url, store_harness.spec)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    elapsed = await asyncio.wait_for(waiter, WAIT + 5)
    assert elapsed < WAIT - 2
    page = await store.list_jobs(JobFilter(task="from-another-process"))
    assert page.total == 1
