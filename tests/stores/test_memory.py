"""MemoryStore specifics that the conformance suite cannot express: URL naming, the shared registry, forget(),
threads, and the features it deliberately lacks."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta

import pytest

from conveyor.errors import Unsupported, ValidationError
from conveyor.model import JobFilter, NewJob
from conveyor.store import open_store
from conveyor.store.memory import MemoryStore


def _url() -> str:
    return f"memory://{uuid.uuid4().hex}"


async def test_open_store_builds_a_memory_store() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore) and store.scheme == "memory"
    assert store.supports_transactions is False


async def test_unnamed_urls_are_private() -> None:
    a, b = MemoryStore("memory://"), MemoryStore("memory:")
    await a.enqueue([NewJob.build("t")])
    assert (await a.list_jobs(JobFilter())).total == 1
    assert (await b.list_jobs(JobFilter())).total == 0
    assert (await MemoryStore("memory://").list_jobs(JobFilter())).total == 0


async def test_named_urls_share_one_data_set_until_forgotten() -> None:
    url = _url()
    try:
        a = MemoryStore(url)
        (job,) = await a.enqueue([NewJob.build("t")])
        b = MemoryStore(url + "/")  # the same name (an option in the query is refused: test_store_options)
        assert await b.get_job(job.id) is not None
        await b.close()  # closing one object keeps the data for the others
        assert await MemoryStore(url).get_job(job.id) is not None
        MemoryStore.forget(url)
        assert await MemoryStore(url).get_job(job.id) is None  # a fresh data set
        assert await a.get_job(job.id) is not None  # open objects keep theirs
    finally:
        MemoryStore.forget(url)


async def test_forget_of_unknown_or_private_urls_is_harmless() -> None:
    MemoryStore.forget("memory://")
    MemoryStore.forget(_url())


def test_a_non_memory_url_is_refused() -> None:
    with pytest.raises(ValidationError):
        MemoryStore("sqlite:///x.db")


async def test_transactions_are_unsupported() -> None:
    store = MemoryStore("memory://")
    with pytest.raises(Unsupported):
        store.enqueue_on_connection(object(), [NewJob.build("t")])
    with pytest.raises(Unsupported):
        await store.aenqueue_on_connection(object(), [NewJob.build("t")])
    (job,) = await store.enqueue([NewJob.build("t")])
    with pytest.raises(Unsupported):
        async with store.handler_transaction(job):
            pass


def test_threads_with_their_own_loops_never_double_claim() -> None:
    """Several event loops (threads) share one named store: the data-set lock keeps every change atomic."""
    url = _url()
    try:
        asyncio.run(MemoryStore(url).enqueue([NewJob.build("t", i) for i in range(2000)]))
        claimed: list[str] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            async def go() -> None:
                store = MemoryStore(url)
                while batch := await store.claim(f"w{n}", ["default"], 7, timedelta(seconds=30)):
                    with lock:
                        claimed.extend(j.id for j in batch)

            asyncio.run(go())

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(claimed) == 2000 and len(set(claimed)) == 2000
    finally:
        MemoryStore.forget(url)


def test_an_enqueue_on_another_thread_wakes_a_waiter() -> None:
    url = _url()
    try:
        store = MemoryStore(url)
        elapsed: list[float] = []

        async def wait() -> None:
            start = time.monotonic()
            await store.wait_for_jobs(20)
            elapsed.append(time.monotonic() - start)

        waiter = threading.Thread(target=lambda: asyncio.run(wait()))
        waiter.start()
        time.sleep(0.1)
        asyncio.run(MemoryStore(url).enqueue([NewJob.build("t")]))
        waiter.join(30)
        assert elapsed and elapsed[0] < 10
    finally:
        MemoryStore.forget(url)
