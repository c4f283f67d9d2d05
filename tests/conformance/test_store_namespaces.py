"""Store conformance: namespace settings are enforced inside the claim, and deleting a namespace deletes its jobs
(store/base.py "Namespace settings", `delete_namespace`).

No caller passes anything about auto_run: the store reads the namespace's settings in the claim's own atomic step,
so a namespace created (or switched) with auto_run off before a job is enqueued never has that job claimed by a
background claim — neither by `claim` nor by a hand-off inside the enqueue. GS2's Run (`claim_user`) still takes it.
"""

from __future__ import annotations

import pytest

from conveyor.errors import ValidationError
from conveyor.model import DEFAULT_NAMESPACE, JobFilter, JobStatus, Namespace, QueueSettings
from conveyor.store import Store, open_store
from tests.conformance.store_helpers import (
    LEASE,
    Taker,
    claim,
    claim_one,
    complete,
    enqueue_one,
    ids,
    offer,
)


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


async def test_a_namespace_deleted_through_another_store_object_takes_new_jobs_again(store_url: str) -> None:
    """Stores may cache what they registered for the claim; a delete made elsewhere must not leave new jobs of the
    namespace unclaimable (two store objects on one URL stand for two processes)."""
    a, b = open_store(store_url), open_store(store_url)
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
