"""Store conformance: enqueue — what gets stored, batches, delays and unique keys (store/base.py)."""

from __future__ import annotations

import pytest

from conveyor.conformance.helpers import (
    claim,
    claim_one,
    complete,
    enqueue_one,
    fail,
    ids,
    later,
    near,
    new,
    same_instant,
)
from conveyor.errors import ValidationError
from conveyor.ids import new_job_id
from conveyor.model import JobFilter, JobStatus, RawJSON, utcnow
from conveyor.store import Store


async def test_enqueue_returns_a_pending_job_with_every_field(store: Store) -> None:
    before = utcnow()
    spec = new(
        "send_email",
        {"to": "a@b", "n": [1, 2.5, None, True], "nested": {"ü": "日本"}},
        namespace="ns1",
        queue="mail",
        priority=-3,
        max_attempts=7,
        user_id="u1",
        group_key="g1",
        unique_key="k1",
    )
    (job,) = await store.enqueue([spec])
    assert job.id == spec.id
    assert (job.namespace, job.queue, job.task) == ("ns1", "mail", "send_email")
    assert job.payload == {"to": "a@b", "n": [1, 2.5, None, True], "nested": {"ü": "日本"}}
    assert job.status is JobStatus.PENDING
    assert (job.priority, job.max_attempts, job.attempts, job.try_number) == (-3, 7, 0, 0)
    assert (job.user_id, job.group_key, job.unique_key) == ("u1", "g1", "k1")
    assert job.duplicate is False
    assert job.started_at is None and job.finished_at is None
    assert job.lease_expires_at is None and job.worker_id is None
    assert job.last_error is None and job.result is None and job.cancel_requested is False
    assert near(job.created, before) and near(job.run_at, before)


async def test_get_job_returns_what_enqueue_stored(store: Store) -> None:
    job = await enqueue_one(store, "t", {"a": 1}, queue="q", priority=5, user_id="u", delay=60)
    got = await store.get_job(job.id)
    assert got is not None
    for name in ("id", "namespace", "queue", "task", "payload", "status", "priority", "attempts", "max_attempts"):
        assert getattr(got, name) == getattr(job, name), name
    assert (got.try_number, got.user_id, got.group_key, got.unique_key) == (0, "u", None, None)
    assert same_instant(got.run_at, job.run_at)
    assert same_instant(got.created, job.created)
    assert got.duplicate is False


async def test_payload_values_of_every_json_kind_round_trip(store: Store) -> None:
    payloads: list[object] = [
        None,
        0,
        -1,
        3.25,
        "text",
        "",
        True,
        False,
        [],
        {},
        [1, "a", {"b": None}],
        {"deep": {"x": [[]]}},
    ]
    jobs = await store.enqueue([new("t", p) for p in payloads])
    for job, payload in zip(jobs, payloads, strict=True):
        got = await store.get_job(job.id)
        assert got is not None
        assert got.payload == payload
        assert type(got.payload) is type(payload)


async def test_batch_enqueue_keeps_input_order_and_stores_all(store: Store) -> None:
    specs = [new("t", {"n": i}, queue=f"q{i % 3}") for i in range(25)]
    jobs = await store.enqueue(specs)
    assert ids(jobs) == [s.id for s in specs]
    assert [j.payload for j in jobs] == [{"n": i} for i in range(25)]
    page = await store.list_jobs(JobFilter(), limit=100)
    assert page.total == 25


async def test_empty_batch_stores_nothing(store: Store) -> None:
    assert await store.enqueue([]) == []
    assert (await store.stats()).total == 0


async def test_delayed_job_is_scheduled_not_due(store: Store) -> None:
    job = await enqueue_one(store, delay=3600)
    assert job.run_at > utcnow()
    assert await claim(store) == []
    stats = await store.stats()
    assert (stats.pending, stats.scheduled) == (1, 1)


async def test_explicit_run_at_in_the_past_is_due(store: Store) -> None:
    job = await enqueue_one(store, run_at=utcnow().replace(year=2020))
    assert (await claim_one(store)).id == job.id


# ---- unique keys ---------------------------------------------------------------------------------------------


async def test_unique_key_duplicate_returns_the_active_job_and_stores_nothing(store: Store) -> None:
    first = await enqueue_one(store, "t", {"v": 1}, unique_key="once")
    second = await enqueue_one(store, "t", {"v": 2}, unique_key="once")
    assert second.duplicate is True
    assert second.id == first.id
    assert second.payload == {"v": 1}
    assert second.status is JobStatus.PENDING
    assert (await store.list_jobs(JobFilter())).total == 1
    stored = await store.get_job(first.id)
    assert stored is not None and stored.duplicate is False


async def test_unique_key_still_held_while_processing(store: Store) -> None:
    first = await enqueue_one(store, unique_key="once")
    claimed = await claim_one(store)
    dup = await enqueue_one(store, unique_key="once")
    assert dup.duplicate is True and dup.id == first.id
    assert dup.status is JobStatus.PROCESSING
    assert claimed.id == first.id


async def test_unique_key_is_freed_when_the_job_completes(store: Store) -> None:
    first = await enqueue_one(store, unique_key="once")
    assert await complete(store, await claim_one(store))
    again = await enqueue_one(store, unique_key="once")
    assert again.duplicate is False and again.id != first.id
    assert (await store.list_jobs(JobFilter())).total == 2


async def test_unique_key_is_freed_by_failed_and_cancelled_jobs(store: Store) -> None:
    await enqueue_one(store, unique_key="a")
    assert await fail(store, await claim_one(store))
    assert (await enqueue_one(store, unique_key="a")).duplicate is False

    cancelled = await enqueue_one(store, unique_key="b")
    await store.cancel(cancelled.id)
    assert (await enqueue_one(store, unique_key="b")).duplicate is False


async def test_unique_key_is_scoped_by_namespace(store: Store) -> None:
    a = await enqueue_one(store, unique_key="k", namespace="a")
    b = await enqueue_one(store, unique_key="k", namespace="b")
    assert not a.duplicate and not b.duplicate and a.id != b.id


async def test_unique_key_ignores_queue_task_and_payload(store: Store) -> None:
    a = await enqueue_one(store, "t1", {"x": 1}, unique_key="k", queue="q1")
    b = await enqueue_one(store, "t2", {"x": 2}, unique_key="k", queue="q2")
    assert b.duplicate and b.id == a.id


async def test_first_of_equal_unique_keys_in_one_batch_wins(store: Store) -> None:
    specs = [
        new("t", {"n": 0}, unique_key="k"),
        new("t", {"n": 1}),
        new("t", {"n": 2}, unique_key="k"),
        new("t", {"n": 3}, unique_key="other"),
        new("t", {"n": 4}, unique_key="k"),
    ]
    jobs = await store.enqueue(specs)
    assert len(jobs) == 5
    assert [j.duplicate for j in jobs] == [False, False, True, False, True]
    assert jobs[2].id == jobs[0].id and jobs[4].id == jobs[0].id
    assert jobs[2].payload == {"n": 0}
    page = await store.list_jobs(JobFilter(), limit=10)
    assert page.total == 3
    assert {j.id for j in page.items} == {specs[0].id, specs[1].id, specs[3].id}


async def test_batch_with_a_key_already_active_stores_the_rest(store: Store) -> None:
    existing = await enqueue_one(store, unique_key="k")
    jobs = await store.enqueue([new(unique_key="k"), new(unique_key="fresh"), new()])
    assert [j.duplicate for j in jobs] == [True, False, False]
    assert jobs[0].id == existing.id
    assert (await store.list_jobs(JobFilter())).total == 3


async def test_jobs_without_unique_key_are_never_duplicates(store: Store) -> None:
    jobs = await store.enqueue([new("t", {"same": 1}) for _ in range(3)])
    assert not any(j.duplicate for j in jobs)
    assert len(set(ids(jobs))) == 3


async def test_delayed_job_with_unique_key_blocks_duplicates(store: Store) -> None:
    first = await enqueue_one(store, unique_key="k", run_at=later(3600))
    assert (await enqueue_one(store, unique_key="k")).id == first.id


async def test_payload_text_is_kept_exactly_as_given(store: Store) -> None:
    """GS2 reads `args` back as the string it pushed (issue 11 §4): a RawJSON payload's text survives every store
    byte for byte (spacing, key order, escapes), less any whitespace around it, while handlers get the value."""
    text = '{"item": "sword",  "n" : 1, "a": "\\u00e9\\n", "z": [1.50, 2e3]}'
    (job,) = await store.enqueue([new("grant", RawJSON("  " + text + "\n"), user_id="u1")])
    assert job.payload == {"item": "sword", "n": 1, "a": "é\n", "z": [1.5, 2000.0]}
    assert job.payload_json == text
    got = await store.get_job(job.id)
    assert got is not None and got.payload_json == text and got.payload == job.payload
    (listed,) = (await store.list_jobs(JobFilter(user_id="u1"))).items
    assert listed.payload_json == text
    (claimed,) = await claim(store)
    assert claimed.payload == job.payload  # the handler's view
    plain = await enqueue_one(store, "t", {"b": 1, "a": [True, None]})
    got_plain = await store.get_job(plain.id)
    assert got_plain is not None and got_plain.payload_json == '{"b":1,"a":[true,null]}'  # compact encoding


async def test_an_id_already_taken_is_refused_whatever_the_first_jobs_state(store: Store) -> None:
    """The cron scheduler's once-per-occurrence rule rests on this: an occurrence's job id is derived from it, so a
    second enqueue of the occurrence (another process, a new leader catching up) is refused by the store itself."""
    first = await enqueue_one(store)
    await complete(store, await claim_one(store))
    with pytest.raises(ValidationError) as raised:
        await store.enqueue([new("task", job_id=first.id)])
    assert raised.value.field == "id"
    with pytest.raises(ValidationError):
        await store.enqueue([new("task", job_id=new_job_id()), new("task", job_id=first.id)])
    assert (await store.stats()).total == 1  # all or nothing: the batch stored nothing
