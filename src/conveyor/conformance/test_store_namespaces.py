"""Store conformance: namespace settings are enforced inside the claim, deleting a namespace deletes its jobs, and
namespace writes never lose one another (store/base.py "Namespace settings", `delete_namespace`, "Namespace
writes never lose one another").

No caller passes anything about auto_run: the store reads the namespace's settings in the claim's own atomic step,
so a namespace created (or switched) with auto_run off before a job is enqueued never has that job claimed by a
background claim — neither by `claim` nor by a hand-off inside the enqueue. GS2's Run (`claim_user`) still takes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import (
    LEASE,
    Taker,
    claim,
    claim_one,
    complete,
    enqueue_one,
    ids,
    offer,
    same_instant,
)
from conveyor.errors import NamespaceExists, NamespaceNotFound, RevisionConflict, ValidationError
from conveyor.model import DEFAULT_NAMESPACE, JobFilter, JobStatus, Namespace, QueueSettings, utcnow
from conveyor.store import Store


async def test_claim_skips_namespaces_whose_auto_run_is_off(store: Store) -> None:
    await store.put_namespace(Namespace("manual", auto_run=False))
    manual = await enqueue_one(store, namespace="manual")
    auto = await enqueue_one(store, namespace="auto")  # no record: default settings, auto_run on
    assert ids(await claim(store, namespaces=None)) == [auto.id]
    assert await claim(store, namespaces=["manual"]) == []  # asking for it by name does not override the setting
    stored = await store.get_job(manual.id)
    assert stored is not None and (stored.status, stored.attempts) == (JobStatus.PENDING, 0)


async def test_switching_auto_run_takes_effect_at_the_next_claim(store: Store) -> None:
    await store.put_namespace(Namespace("flip", auto_run=True))
    first = await enqueue_one(store, namespace="flip")
    await store.put_namespace(Namespace("flip", auto_run=False))
    second = await enqueue_one(store, namespace="flip")
    assert await claim(store) == []
    await store.put_namespace(Namespace("flip", auto_run=True))
    assert ids(await claim(store)) == [first.id, second.id]


async def test_run_still_takes_jobs_of_a_namespace_whose_auto_run_is_off(store: Store) -> None:
    await store.put_namespace(Namespace("game", auto_run=False))
    job = await enqueue_one(store, namespace="game", user_id="p1")
    assert await claim(store) == []
    run = await store.claim_user("game", "p1", "runner", LEASE)
    assert run is not None and run.id == job.id and run.lease_token
    assert await complete(store, run)


async def test_a_handoff_takes_nothing_from_a_namespace_whose_auto_run_is_off(store: Store) -> None:
    if not store.supports_handoff:
        pytest.skip(f"{store.scheme} has no hand-off")
    await store.put_namespace(Namespace("manual", auto_run=False))
    taker = Taker()
    offer(store, taker, limit=5)  # an idle worker serving every namespace
    job = await enqueue_one(store, namespace="manual")
    assert taker.jobs == []
    assert taker.deliveries in ([], [[]])  # offered nothing (or told "nothing", and it offers again)
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    auto = await enqueue_one(store, namespace="elsewhere")
    offer(store, taker, limit=5)
    again = await enqueue_one(store, namespace="elsewhere")
    assert [j.id for j in taker.jobs] in ([again.id], [auto.id, again.id])


async def test_delete_namespace_deletes_its_jobs_attempts_and_settings_in_one_step(store: Store) -> None:
    await store.put_namespace(Namespace("gone", auto_run=True))
    await store.put_queue_settings(QueueSettings("gone", "default", paused=False, concurrency=5))
    done = await enqueue_one(store, namespace="gone")
    running = await claim_one(store)
    assert running.id == done.id and await complete(store, running)
    lane = [await enqueue_one(store, namespace="gone", user_id="p1", unique_key=f"k{i}") for i in range(3)]
    processing = await enqueue_one(store, namespace="gone", queue="other")
    held = await claim_one(store, queues=["other"])
    assert held.id == processing.id
    keep = await enqueue_one(store, namespace="kept", user_id="p1")

    assert await store.delete_namespace("gone") is True
    assert await store.get_namespace("gone") is None
    for job in (done, *lane, processing):
        assert await store.get_job(job.id) is None
        assert await store.attempts(job.id) == []
    assert (await store.list_jobs(JobFilter(namespace="gone"))).total == 0
    assert (await store.stats(namespace="gone")).total == 0
    assert [q for q in await store.list_queues("gone")] == []
    assert await complete(store, held) is False  # its worker's report is refused: the job is gone
    assert await store.delete_namespace("gone") is False

    # Other namespaces are untouched, and the name can be used again at once (nothing stale is left behind).
    stored = await store.get_job(keep.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    reborn = await enqueue_one(store, namespace="gone", user_id="p1", unique_key="k0")
    assert not reborn.duplicate
    assert set(ids(await claim(store, limit=10))) == {keep.id, reborn.id}


async def test_delete_namespace_without_a_record_still_deletes_its_jobs(store: Store) -> None:
    job = await enqueue_one(store, namespace="implicit")
    assert await store.delete_namespace("implicit") is True
    assert await store.get_job(job.id) is None
    assert await store.delete_namespace("implicit") is False


async def test_a_namespace_deleted_through_another_store_object_takes_new_jobs_again(
    store_harness: StoreHarness, store_url: str
) -> None:
    """Stores may cache what they registered for the claim; a delete made elsewhere must not leave new jobs of the
    namespace unclaimable (two store objects on one URL stand for two processes)."""
    a, b = store_harness.open(store_url), store_harness.open(store_url)
    await a.open()
    await b.open()
    try:
        first = await enqueue_one(a, namespace="twice")
        assert await b.delete_namespace("twice") is True
        assert await a.get_job(first.id) is None
        second = await enqueue_one(a, namespace="twice")
        assert ids(await claim(b)) == [second.id]
    finally:
        await a.close()
        await b.close()


async def test_default_namespace_cannot_be_deleted_and_keeps_its_jobs(store: Store) -> None:
    job = await enqueue_one(store)
    with pytest.raises(ValidationError):
        await store.delete_namespace(DEFAULT_NAMESPACE)
    assert await store.get_job(job.id) is not None


async def test_next_due_skips_namespaces_whose_auto_run_is_off(store: Store) -> None:
    await store.put_namespace(Namespace("manual", auto_run=False))
    await enqueue_one(store, namespace="manual")  # due now, but no background claim takes it
    await enqueue_one(store, namespace="auto", delay=60)
    due = await store.next_due(["default"])
    assert due is not None and 50 < due <= 61
    await store.put_namespace(Namespace("manual", auto_run=True))
    due = await store.next_due(["default"])
    assert due is not None and due <= 0


# ---- writes that cannot lose one another (store/base.py "Namespace writes never lose one another") ---------------


async def test_create_namespace_stores_a_new_namespace(store: Store) -> None:
    created = await store.create_namespace(Namespace("fresh", description="made once", auto_run=False))
    assert (created.name, created.description, created.auto_run) == ("fresh", "made once", False)
    got = await store.get_namespace("fresh")
    assert got is not None and got.description == "made once" and got.revision == created.revision


async def test_create_namespace_refuses_an_existing_name_and_changes_nothing(store: Store) -> None:
    first = await store.create_namespace(Namespace("taken", description="first"))
    with pytest.raises(NamespaceExists):
        await store.create_namespace(Namespace("taken", description="second", auto_run=False))
    got = await store.get_namespace("taken")
    assert got is not None and (got.description, got.auto_run, got.revision) == ("first", True, first.revision)


async def test_the_default_namespace_always_exists_for_create(store: Store) -> None:
    with pytest.raises(NamespaceExists):
        await store.create_namespace(Namespace(DEFAULT_NAMESPACE, max_attempts=7))
    got = await store.get_namespace(DEFAULT_NAMESPACE)
    assert got is not None and got.max_attempts != 7


async def test_of_concurrent_creates_exactly_one_wins_and_its_settings_are_stored(
    store_harness: StoreHarness, store_url: str
) -> None:
    """Ten writers (five store objects, as five processes) create one name at once: one succeeds, nine are told it
    exists, and what is stored is the winner's settings (a read-then-put would let every one "succeed" and the last
    write win)."""
    stores = [store_harness.open(store_url) for _ in range(5)]
    for s in stores:
        await s.open()
    try:

        async def create(i: int) -> Namespace | None:
            try:
                return await stores[i % 5].create_namespace(Namespace("race", description=f"writer {i}"))
            except NamespaceExists:
                return None

        results = await asyncio.gather(*(create(i) for i in range(10)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        got = await stores[0].get_namespace("race")
        assert got is not None and got.description == winners[0].description
    finally:
        for s in stores:
            await s.close()


async def test_put_with_the_expected_revision_replaces_and_bumps_it(store: Store) -> None:
    first = await store.create_namespace(Namespace("cas", description="one"))
    second = await store.put_namespace(
        replace(first, description="two", created=utcnow()), expected_revision=first.revision
    )
    assert second.revision == first.revision + 1 and second.description == "two"
    assert same_instant(second.created, first.created)  # created is the store's, not the writer's
    got = await store.get_namespace("cas")
    assert got is not None and (got.description, got.revision) == ("two", second.revision)


async def test_put_with_a_stale_revision_is_refused_and_changes_nothing(store: Store) -> None:
    first = await store.create_namespace(Namespace("cas", description="one"))
    await store.put_namespace(replace(first, description="two"), expected_revision=first.revision)
    with pytest.raises(RevisionConflict):
        await store.put_namespace(replace(first, description="lost"), expected_revision=first.revision)
    got = await store.get_namespace("cas")
    assert got is not None and (got.description, got.revision) == ("two", first.revision + 1)


async def test_put_with_an_expected_revision_never_creates(store: Store) -> None:
    with pytest.raises(NamespaceNotFound):
        await store.put_namespace(Namespace("nobody"), expected_revision=0)
    assert await store.get_namespace("nobody") is None


async def test_a_never_stored_default_namespace_has_revision_zero(store: Store) -> None:
    default = await store.get_namespace(DEFAULT_NAMESPACE)
    assert default is not None and default.revision == 0
    stored = await store.put_namespace(replace(default, max_attempts=6), expected_revision=0)
    assert stored.revision == 1 and stored.max_attempts == 6
    with pytest.raises(RevisionConflict):
        await store.put_namespace(replace(default, max_attempts=8), expected_revision=0)
    again = await store.put_namespace(replace(stored, max_attempts=9), expected_revision=1)
    assert again.revision == 2 and again.max_attempts == 9


async def test_concurrent_updates_of_different_settings_all_land(store_harness: StoreHarness, store_url: str) -> None:
    """Ten writers each change their own setting of one namespace at once (through five store objects): every
    change is there afterwards, and the revision counts each one."""
    stores = [store_harness.open(store_url) for _ in range(5)]
    for s in stores:
        await s.open()
    try:
        start = await stores[0].create_namespace(Namespace("shared"))

        async def update(i: int) -> Namespace:
            async def change(ns: Namespace) -> Namespace:
                return replace(ns, extra={**ns.extra, f"k{i}": i})

            return await stores[i % 5].update_namespace("shared", change)

        await asyncio.gather(*(update(i) for i in range(10)))
        got = await stores[0].get_namespace("shared")
        assert got is not None
        assert dict(got.extra) == {f"k{i}": i for i in range(10)}
        assert got.revision == start.revision + 10
    finally:
        for s in stores:
            await s.close()


async def test_update_of_a_missing_or_deleted_namespace_is_not_found(store: Store) -> None:
    async def unchanged(ns: Namespace) -> Namespace:
        return ns

    with pytest.raises(NamespaceNotFound):
        await store.update_namespace("nobody", unchanged)
    await store.create_namespace(Namespace("brief"))

    async def delete_first(ns: Namespace) -> Namespace:
        await store.delete_namespace("brief")  # deleted between the read and the write
        return replace(ns, description="too late")

    with pytest.raises(NamespaceNotFound):
        await store.update_namespace("brief", delete_first)
    assert await store.get_namespace("brief") is None
