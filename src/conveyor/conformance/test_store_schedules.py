"""Store conformance: cron schedules made at runtime (`put_schedule` and friends) and the run records of every
schedule (`record_schedule_run`, `schedule_runs`), and the store-side rule behind "exactly one job per cron
occurrence": the occurrence's job id is derived from (schedule, occurrence), and the store's insert refuses a
second job with it, whoever races (docs/cron.md)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from conveyor.conformance.harness import StoreHarness
from conveyor.cron import occurrence_id
from conveyor.errors import ValidationError
from conveyor.model import ScheduleRecord, ScheduleRun, utcnow
from conveyor.store import Store

from .helpers import new

T0 = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def record(name: str = "nightly", **changes: object) -> ScheduleRecord:
    base = ScheduleRecord(
        name=name,
        spec="30 2 * * *",
        task="reset",
        payload={"scope": "daily", "ü": [1, 2]},
        timezone="Europe/Berlin",
        options={"queue": "maintenance", "priority": 3},
        backfill="latest",
        backfill_window=6 * 3600.0,
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def test_a_schedule_is_created_once_read_listed_updated_and_deleted(store: Store) -> None:
    first = record()
    assert await store.put_schedule(first, create=True) is True
    assert await store.put_schedule(record(spec="@hourly"), create=True) is False  # the name is taken
    assert await store.get_schedule("nightly") == first
    assert await store.put_schedule(record("other", spec="@every 1m"), create=False) is False  # no such schedule
    assert await store.get_schedule("other") is None

    await store.put_schedule(record("a-first", timezone="UTC", enabled=False), create=True)
    assert [s.name for s in await store.list_schedules()] == ["a-first", "nightly"]

    changed = record(spec="0 3 * * *", enabled=False, payload=None, updated_at=T0 + timedelta(hours=1))
    assert await store.put_schedule(changed, create=False) is True
    assert await store.get_schedule("nightly") == changed

    assert await store.delete_schedule("nightly") is True
    assert await store.delete_schedule("nightly") is False
    assert await store.get_schedule("nightly") is None
    assert [s.name for s in await store.list_schedules()] == ["a-first"]


async def test_run_records_keep_the_first_record_of_an_occurrence_newest_first(store: Store) -> None:
    runs = [ScheduleRun("nightly", T0 + timedelta(days=i), job_id=f"job-{i}", recorded_at=T0) for i in range(5)]
    for run in runs:
        assert await store.record_schedule_run(run) is True
    again = ScheduleRun("nightly", runs[2].occurrence, job_id="job-other", note="late")
    assert await store.record_schedule_run(again) is False
    listed = await store.schedule_runs("nightly", limit=3)
    assert [r.job_id for r in listed] == ["job-4", "job-3", "job-2"]
    assert listed[0] == runs[4]
    assert await store.schedule_runs("nobody") == []
    manual = ScheduleRun("nightly", T0 + timedelta(days=9), job_id=None, manual=True, note="skipped: paused")
    await store.record_schedule_run(manual)
    assert (await store.schedule_runs("nightly", limit=1))[0] == manual
    assert len(await store.schedule_runs("other")) == 0


async def test_run_records_are_trimmed_to_the_newest_and_deleted_with_their_schedule(store: Store) -> None:
    await store.put_schedule(record(), create=True)
    for i in range(7):
        await store.record_schedule_run(ScheduleRun("nightly", T0 + timedelta(hours=i), job_id=f"j{i}"), keep=4)
    assert [r.job_id for r in await store.schedule_runs("nightly", limit=50)] == ["j6", "j5", "j4", "j3"]
    await store.record_schedule_run(ScheduleRun("nightly", T0 - timedelta(hours=1), job_id="older"), keep=4)
    assert "older" not in [r.job_id for r in await store.schedule_runs("nightly", limit=50)]
    await store.delete_schedule("nightly")
    assert await store.schedule_runs("nightly") == []


async def test_of_concurrent_creates_of_one_schedule_exactly_one_wins(
    store_harness: StoreHarness, store_url: str
) -> None:
    stores = [store_harness.open(store_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        results = await asyncio.gather(
            *(stores[i].put_schedule(record(payload={"writer": i}), create=True) for i in range(4))
        )
        assert sorted(results) == [False, False, False, True]
        winner = results.index(True)
        stored = await stores[0].get_schedule("nightly")
        assert stored is not None and stored.payload == {"writer": winner}
    finally:
        for s in stores:
            await s.close()


async def test_four_concurrent_inserters_of_one_occurrence_store_one_job(
    store_harness: StoreHarness, store_url: str
) -> None:
    """What four scheduler processes do for one occurrence: enqueue its job under the derived id, then record the
    run. The store's insert keeps one job; the other three are refused on the id; one run record wins."""
    at = T0 + timedelta(hours=1)
    job_id = occurrence_id("nightly", at)
    stores = [store_harness.open(store_url) for _ in range(4)]
    for s in stores:
        await s.open()

    async def scheduler(s: Store, i: int) -> tuple[bool, bool]:
        try:
            await s.enqueue([new("reset", {"from": i}, job_id=job_id, queue="maintenance")])
            enqueued = True
        except ValidationError as exc:
            assert exc.field == "id"
            enqueued = False
        recorded = await s.record_schedule_run(ScheduleRun("nightly", at, job_id=job_id))
        return enqueued, recorded

    try:
        for _ in range(3):  # a few rounds: each a fresh race
            results = await asyncio.gather(*(scheduler(stores[i], i) for i in range(4)))
            assert sum(e for e, _ in results) <= 1 and sum(r for _, r in results) <= 1
            at += timedelta(days=1)
            job_id = occurrence_id("nightly", at)
        stats = await stores[0].stats()
        assert stats.total == 3
        runs = await stores[0].schedule_runs("nightly")
        assert len(runs) == 3
        for run in runs:
            assert run.job_id is not None and await stores[0].get_job(run.job_id) is not None
    finally:
        for s in stores:
            await s.close()


async def test_records_keep_instants_exactly_and_text_as_written(store: Store) -> None:
    at = datetime(2026, 10, 25, 0, 30, 0, 123456, tzinfo=UTC)
    now = utcnow()
    rec = record("zürich ✓ nightly", timezone="Europe/Zurich", created_at=now, updated_at=now, payload="ü" * 50)
    await store.put_schedule(rec, create=True)
    assert await store.get_schedule(rec.name) == rec
    await store.record_schedule_run(ScheduleRun(rec.name, at, job_id="j", recorded_at=now))
    (run,) = await store.schedule_runs(rec.name)
    assert run.occurrence == at and run.recorded_at == now
