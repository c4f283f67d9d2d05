"""Store conformance: keyset pages (issue 11 item 2, issue 16 "keyset lists"), sort orders and search filters.

A page ends at a key (the last job's sort value and id); the next page starts right after it. So jobs consumed,
moved or added between two pages never make a later page skip or repeat a job that stayed in the filter — what
offsets did: page 1 was [1, 2], a Run consumed job 1, "offset 2" then started at job 4 and job 3 was never listed.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from conveyor.conformance.helpers import claim, claim_one, complete, enqueue_one, fail, ids, new, retry
from conveyor.errors import ValidationError
from conveyor.model import (
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    id_fragment,
    parse_json_path,
    sort_key_before,
    sort_value,
    utcnow,
)
from conveyor.store import Store


async def _walk(store: Store, flt: JobFilter, sort: JobSort, size: int) -> list[Job]:
    """Every page of the list, following `next` until the last page."""
    out: list[Job] = []
    after: JobKey | None = None
    for _ in range(1000):
        page = await store.list_jobs(flt, size, after=after, sort=sort)
        assert len(page.items) <= size
        out.extend(page.items)
        if page.next is None:
            return out
        assert page.items, "a page with a next key has jobs"
        assert page.next == JobKey.of(page.items[-1], sort)
        after = page.next
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize("sort", [JobSort.CREATED, JobSort.CREATED_DESC])
async def test_consuming_and_enqueuing_between_pages_never_skips_or_repeats(store: Store, sort: JobSort) -> None:
    start = utcnow() - timedelta(seconds=60)
    jobs = [await enqueue_one(store, "t", i, now=start + timedelta(seconds=i)) for i in range(9)]
    flt = JobFilter(status=JobStatus.PENDING)
    seen: list[str] = []
    consumed: set[str] = set()
    added: list[str] = []
    after: JobKey | None = None
    for turn in range(20):
        page = await store.list_jobs(flt, 2, after=after, sort=sort)
        seen.extend(ids(page.items))
        if page.next is None:
            break
        after = page.next
        # between pages, GS2 Run consumes the oldest job and a game pushes a new one
        consumed.add((await claim_one(store)).id)
        added.append((await enqueue_one(store, "t", 100 + turn)).id)
    else:
        raise AssertionError("the pages never ended")
    assert len(seen) == len(set(seen)), f"a job was listed twice: {seen}"
    stayed = [j.id for j in jobs if j.id not in consumed]
    assert set(stayed) <= set(seen), f"jobs never listed: {set(stayed) - set(seen)}"
    assert not (set(seen) - {j.id for j in jobs} - set(added)), "only jobs of the list appear"
    if sort is JobSort.CREATED:  # oldest first: jobs added meanwhile come at the end, and are listed too
        assert set(added) <= set(seen) | consumed


async def test_offset_after_a_key_and_the_last_page_has_no_next(store: Store) -> None:
    specs = [new("t", i) for i in range(5)]
    await store.enqueue(specs)
    page = await store.list_jobs(JobFilter(), 2)
    assert page.next is not None and page.total == 5
    rest = await store.list_jobs(JobFilter(), 10, after=page.next)
    assert len(rest.items) == 3 and rest.next is None and rest.total == 5
    skipped = await store.list_jobs(JobFilter(), 1, 1, after=page.next)  # offset applies after the key
    assert ids(skipped.items) == ids(rest.items)[1:2]
    exact = await store.list_jobs(JobFilter(), 5)
    assert exact.next is None, "a page that ends the list says so"


async def _history(store: Store) -> list[Job]:
    """Jobs in every state, with equal created times (a batch), varied run_at, attempts and finish times."""
    now = utcnow()
    batch = [new("t", {"n": i}, now=now, delay=[0, 0, 0, 3600, 7200, 0, 0, 0][i]) for i in range(8)]
    await store.enqueue(batch)
    done = await claim_one(store)
    await complete(store, done)
    dead = await claim_one(store)
    await fail(store, dead)
    again = await claim_one(store)
    await retry(store, again, utcnow() + timedelta(hours=3))
    await claim(store, limit=1)  # one processing
    later = [await enqueue_one(store, "u", {"n": 10 + i}, delay=60 * i) for i in range(3)]
    done2 = await claim_one(store)
    await complete(store, done2)
    page = await store.list_jobs(JobFilter(), 100)
    assert page.total == len(batch) + len(later)
    return list(page.items)


@pytest.mark.parametrize("sort", list(JobSort))
async def test_every_sort_order_pages_by_key_exactly_like_one_page(store: Store, sort: JobSort) -> None:
    await _history(store)
    whole = (await store.list_jobs(JobFilter(), 100, sort=sort)).items
    keys = [(sort_value(j, sort), j.id) for j in whole]
    for a, b in itertools.pairwise(keys):
        assert sort_key_before(a, b, sort.descending), f"{sort.value}: {a} listed before {b}"
    assert ids(await _walk(store, JobFilter(), sort, 3)) == ids(whole)
    assert ids(await _walk(store, JobFilter(), sort, 1)) == ids(whole)


async def test_a_key_continues_only_its_own_order(store: Store) -> None:
    await store.enqueue([new("t", i) for i in range(3)])
    page = await store.list_jobs(JobFilter(), 1, sort=JobSort.RUN_AT)
    assert page.next is not None
    with pytest.raises(ValidationError) as info:
        await store.list_jobs(JobFilter(), 1, after=page.next, sort=JobSort.CREATED_DESC)
    assert info.value.field == "cursor"


async def test_a_key_whose_job_is_gone_still_places_the_page(store: Store) -> None:
    specs = [new("t", i) for i in range(4)]
    await store.enqueue(specs)
    page = await store.list_jobs(JobFilter(), 2)
    assert page.next is not None
    await store.delete(page.items[-1].id)
    rest = await store.list_jobs(JobFilter(), 10, after=page.next)
    assert ids(rest.items) == sorted((s.id for s in specs), reverse=True)[2:]


# ---- search filters (docs/ui-api-needs.md §3) -----------------------------------------------------------------


async def listed(store: Store, **criteria: object) -> list[str]:
    page = await store.list_jobs(JobFilter(**criteria), 100)  # type: ignore[arg-type]
    assert page.total == len(page.items), criteria
    return ids(page.items)


async def test_scheduled_and_retrying(store: Store) -> None:
    due = await enqueue_one(store, "t")
    scheduled = await enqueue_one(store, "t", delay=3600)
    retried = await claim_one(store)
    assert retried.id == due.id
    await retry(store, retried, utcnow() + timedelta(hours=1))
    assert await listed(store, scheduled=True) == [scheduled.id]  # a retry waiting is not "scheduled"
    assert await listed(store, retrying=True) == [due.id]


async def test_id_fragments_begin_or_end_the_id(store: Store) -> None:
    a = await enqueue_one(store, "t")
    b = await enqueue_one(store, "t")
    assert await listed(store, id_fragment=id_fragment(a.id[-8:])) == [a.id]
    assert await listed(store, id_fragment=id_fragment(a.id[-13:].upper())) == [a.id]  # a dash, any case
    assert await listed(store, id_fragment=id_fragment(b.id[:10])) in ([b.id], [b.id, a.id])
    assert set(await listed(store, id_fragment=id_fragment(a.id[:4]))) >= {a.id}
    assert await listed(store, id_fragment=id_fragment("ffffffffffff")) == []
    with pytest.raises(ValidationError):
        id_fragment("xyz")


async def test_payload_text_and_json_path(store: Store) -> None:
    a = await enqueue_one(store, "t", {"user": {"id": 42, "name": "Alice Smith"}, "items": [{"sku": "A-1"}]})
    b = await enqueue_one(store, "t", {"user": {"id": "42", "name": "bob"}, "items": []})
    c = await enqueue_one(store, "t", {"user": {"id": 7}, "note": "50% off_"})
    assert await listed(store, q="alice smith") == [a.id]
    assert await listed(store, q="BOB") == [b.id]
    assert await listed(store, q="50% off_") == [c.id]  # LIKE's wildcards are literal
    assert await listed(store, q="0%") == [c.id]
    assert set(await listed(store, path=parse_json_path("$.user.id"), value="42")) == {a.id, b.id}
    assert await listed(store, path=parse_json_path("user.id"), value="7") == [c.id]
    assert await listed(store, path=parse_json_path("items[0].sku"), value="A-1") == [a.id]
    assert await listed(store, path=parse_json_path("$.user.name"), value="bob") == [b.id]
    assert await listed(store, path=parse_json_path("$.missing"), value="1") == []


async def test_partial_queue_and_task_names(store: Store) -> None:
    a = await enqueue_one(store, "Send_Mail", queue="mail-out")
    b = await enqueue_one(store, "resize", queue="images")
    assert await listed(store, queue_contains="MAIL") == [a.id]
    assert await listed(store, task_contains="siz") == [b.id]
    assert await listed(store, task_contains="_") == [a.id]  # wildcards are literal
    assert await listed(store, queue_contains="%") == []


async def test_searches_page_by_key_too(store: Store) -> None:
    jobs = [await enqueue_one(store, "t", {"k": "find me" if i % 2 else "no"}) for i in range(9)]
    wanted = [j.id for j in reversed(jobs) if j.payload["k"] == "find me"]
    assert ids(await _walk(store, JobFilter(q="find"), JobSort.CREATED_DESC, 2)) == wanted
    assert ids(await _walk(store, JobFilter(q="find"), JobSort.RUN_AT, 3)) == list(reversed(wanted))
