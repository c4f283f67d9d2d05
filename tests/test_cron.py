"""Cron that users can trust (issue 13 item 5): IANA time zones with correct DST (a fake clock across both DST days
of 2026 in Europe/Berlin and America/New_York), back-fill of occurrences missed while nothing ran, schedules made
at runtime (`app.schedules`) beside those declared in code, and their history. In-memory store: the store side is
in the conformance suite (test_store_schedules), the real-process race in tests/conformance/test_cron_processes.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor import Conveyor, ValidationError
from conveyor.cron import Schedule, occurrence_id
from conveyor.errors import ScheduleDeclaredInCode, ScheduleExists, ScheduleNotFound
from conveyor.maintenance import Scheduler
from conveyor.store.memory import MemoryStore

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# 2026's DST days: (zone, spring-forward day, fall-back day)
DST_DAYS = [
    ("Europe/Berlin", BERLIN, datetime(2026, 3, 29), datetime(2026, 10, 25)),
    ("America/New_York", NEW_YORK, datetime(2026, 3, 8), datetime(2026, 11, 1)),
]


@pytest.fixture
async def app() -> AsyncIterator[Conveyor]:
    url = f"memory://cron-{uuid.uuid4().hex}"
    conveyor = Conveyor(url)
    await conveyor.aopen()
    try:
        yield conveyor
    finally:
        await conveyor.aclose()
        MemoryStore.forget(url)


def local_day(zone: ZoneInfo, day: datetime) -> tuple[datetime, datetime]:
    """The instants (UTC) that start and end the local calendar day `day` in `zone`."""
    start = day.replace(tzinfo=zone).astimezone(UTC)
    end = (day + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC)
    return start, end


def occurrences(spec: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    """The occurrences in [start, end), by walking next_after from just before start."""
    schedule = Schedule(spec, timezone)
    found, at = [], start - timedelta(microseconds=1)
    while (at := schedule.next_after(at)) < end:
        found.append(at)
    return found


def wall(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%H:%M%z")


# ---- time zones and DST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "zone", "spring", "fall"), DST_DAYS, ids=[d[0] for d in DST_DAYS])
def test_a_daily_time_in_the_skipped_hour_runs_once_at_the_shifted_instant(
    name: str, zone: ZoneInfo, spring: datetime, fall: datetime
) -> None:
    runs = occurrences("30 2 * * *", name, *local_day(zone, spring))
    assert len(runs) == 1
    # 02:30 does not exist that day: it runs at the instant 02:30 has on the old offset, one hour later on the clock
    assert runs[0] == spring.replace(hour=2, minute=30, tzinfo=zone).astimezone(UTC)
    assert wall(runs[0], zone).startswith("03:30")
    # the days around it run at 02:30 local
    for other in (spring - timedelta(days=1), spring + timedelta(days=1)):
        (run,) = occurrences("30 2 * * *", name, *local_day(zone, other))
        assert wall(run, zone).startswith("02:30")


@pytest.mark.parametrize(("name", "zone", "spring", "fall"), DST_DAYS, ids=[d[0] for d in DST_DAYS])
def test_a_daily_time_in_the_repeated_hour_runs_once_at_the_first_instant(
    name: str, zone: ZoneInfo, spring: datetime, fall: datetime
) -> None:
    hour = 1 if name == "America/New_York" else 2  # the repeated hour: 01:xx in New York, 02:xx in Berlin
    runs = occurrences(f"30 {hour} * * *", name, *local_day(zone, fall))
    assert len(runs) == 1
    assert runs[0] == fall.replace(hour=hour, minute=30, tzinfo=zone, fold=0).astimezone(UTC)  # summer time
    assert runs[0].astimezone(zone).dst() != timedelta(0)


@pytest.mark.parametrize(("name", "zone", "spring", "fall"), DST_DAYS, ids=[d[0] for d in DST_DAYS])
def test_hourly_and_minutely_schedules_follow_elapsed_time_across_both_transitions(
    name: str, zone: ZoneInfo, spring: datetime, fall: datetime
) -> None:
    for day, hours in ((spring, 23), (fall, 25), (spring + timedelta(days=7), 24)):
        start, end = local_day(zone, day)
        assert (end - start) == timedelta(hours=hours)
        hourly = occurrences("0 * * * *", name, start, end)
        assert len(hourly) == hours, [wall(a, zone) for a in hourly]
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))
        minutely = occurrences("* * * * *", name, start, end)
        assert len(minutely) == hours * 60
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutely))
        quarter = occurrences("*/15 * * * *", name, start, end)
        assert len(quarter) == hours * 4
    # a schedule naming several hours: the skipped one runs shifted, the repeated one once
    spring_runs = occurrences("0 1,2,3 * * *", name, *local_day(zone, spring))
    fall_runs = occurrences("0 1,2,3 * * *", name, *local_day(zone, fall))
    assert len(set(spring_runs)) == len(spring_runs) and len(fall_runs) == 3
    assert sorted(spring_runs) == spring_runs and sorted(fall_runs) == fall_runs


def test_daily_midnight_and_every_in_a_zone() -> None:
    start, end = local_day(BERLIN, datetime(2026, 3, 29))
    (midnight,) = occurrences("@daily", "Europe/Berlin", start, end)
    assert midnight == start and wall(midnight, BERLIN) == "00:00+0100"
    # @every counts elapsed time; the zone does not move it
    assert occurrences("@every 1h", "Europe/Berlin", start, end) == occurrences("@every 1h", "UTC", start, end)


def test_an_unknown_zone_is_refused_at_declaration(app: Conveyor) -> None:
    for bad in ("Mars/Olympus", "", "Europe/../etc/passwd", "x" * 100):
        with pytest.raises(ValidationError) as raised:
            app.cron("30 2 * * *", "reset", timezone=bad, name=f"bad-{len(bad)}")
        assert raised.value.field == "timezone"
        assert "IANA" in str(raised.value)
    with pytest.raises(ValidationError, match="backfill"):
        app.cron("30 2 * * *", "reset", backfill="some")  # type: ignore[arg-type]
    app.cron("30 2 * * *", "reset", timezone="Europe/Berlin")
    assert app.schedules["reset"].timezone == "Europe/Berlin"
    assert "reset" not in app.tasks  # a name, not a handler


async def test_the_scheduler_runs_a_berlin_0230_schedule_once_on_each_dst_day(app: Conveyor) -> None:
    """A fake clock ticking every minute through both of 2026's DST days: one job per day, at the rule's instant."""
    app.cron("30 2 * * *", "reset", {"scope": "daily"}, timezone="Europe/Berlin")
    for day in (datetime(2026, 3, 29), datetime(2026, 10, 25)):
        start, end = local_day(BERLIN, day)
        scheduler = Scheduler(app, now=start)
        t = start
        while t < end:
            await scheduler.tick(t)
            t += timedelta(minutes=1)
        expected = day.replace(hour=2, minute=30, tzinfo=BERLIN).astimezone(UTC)
        job = await app.aget_job(occurrence_id("reset", expected))
        assert job is not None and job.payload == {"scope": "daily"}
    assert (await app.astats()).total == 2
    runs = [r for r in await app.schedules.aruns("reset") if r.job_id is not None]  # (and a skipped-days note)
    assert [wall(r.occurrence, BERLIN) for r in runs] == ["02:30+0200", "03:30+0200"]  # October's, March's


# ---- back-fill -----------------------------------------------------------------------------------------------


async def run_then_outage(app: Conveyor, backfill: str, window: timedelta | None = None) -> list[datetime]:
    """Run an every-10-minutes schedule at 10:00, stop every scheduler until 13:05, start one again; return the
    occurrences that then have jobs (by their run records)."""
    app.cron("*/10 * * * *", "sync", backfill=backfill, backfill_window=window)  # type: ignore[arg-type]
    t0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    first = Scheduler(app, now=t0 - timedelta(minutes=1))
    await first.tick(t0)
    back = t0 + timedelta(hours=3, minutes=5)
    second = Scheduler(app, now=back, catch_up=60)
    await second.tick(back)
    runs = await app.schedules.aruns("sync", limit=100)
    return sorted(r.occurrence for r in runs if r.job_id is not None)


async def test_backfill_none_skips_missed_occurrences_and_says_so(app: Conveyor) -> None:
    done = await run_then_outage(app, "none")
    assert done == [datetime(2026, 6, 1, 10, 0, tzinfo=UTC)]
    notes = [r.note for r in await app.schedules.aruns("sync") if r.job_id is None]
    assert notes == ["skipped 18 missed occurrences (back-fill none)"]


async def test_backfill_latest_enqueues_the_most_recent_missed_occurrence(app: Conveyor) -> None:
    done = await run_then_outage(app, "latest")
    assert done == [datetime(2026, 6, 1, 10, 0, tzinfo=UTC), datetime(2026, 6, 1, 13, 0, tzinfo=UTC)]


async def test_backfill_all_enqueues_each_missed_occurrence_within_the_window(app: Conveyor) -> None:
    done = await run_then_outage(app, "all")
    assert len(done) == 1 + 18 and len(set(done)) == len(done)
    assert (await app.astats()).total == 19


async def test_backfill_all_is_bounded_by_its_window(app: Conveyor) -> None:
    done = await run_then_outage(app, "all", timedelta(hours=1))
    assert done[0] == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert done[1:] == [datetime(2026, 6, 1, 12, 10, tzinfo=UTC) + timedelta(minutes=10 * i) for i in range(6)]


async def test_a_fail_over_gap_is_caught_up_whatever_the_policy(app: Conveyor) -> None:
    app.cron("* * * * *", "tick")
    t0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    await Scheduler(app, now=t0 - timedelta(seconds=1)).tick(t0)
    takeover = t0 + timedelta(minutes=2, seconds=30)  # the new leader starts 2.5 minutes later, grace 5 minutes
    await Scheduler(app, now=takeover, catch_up=300).tick(takeover)
    assert (await app.astats()).total == 3  # 10:00, 10:01, 10:02


# ---- runtime schedules ---------------------------------------------------------------------------------------


async def test_runtime_schedules_are_created_listed_updated_paused_and_deleted(app: Conveyor) -> None:
    app.cron("@hourly", "cleanup")
    info = await app.schedules.acreate(
        "reset-berlin", "30 2 * * *", "reset", {"scope": "daily"}, timezone="Europe/Berlin", queue="maintenance"
    )
    assert info.source == "runtime" and not info.paused and info.next_run_at is not None
    listed = await app.schedules.alist()
    assert [(s.name, s.source) for s in listed] == [("cleanup", "code"), ("reset-berlin", "runtime")]
    assert "reset-berlin" not in app.schedules  # the mapping holds the code schedules

    with pytest.raises(ScheduleExists, match="exists already"):
        await app.schedules.acreate("reset-berlin", "@daily", "reset")
    with pytest.raises(ScheduleExists, match="declared in code"):
        await app.schedules.acreate("cleanup", "@daily", "cleanup")
    for bad in (
        lambda: app.schedules.acreate("x", "30 2 * * *", "reset", timezone="Nowhere/Land"),
        lambda: app.schedules.acreate("x", "not a spec", "reset"),
        lambda: app.schedules.acreate("a/b", "@daily", "reset"),
        lambda: app.schedules.acreate("x", "@daily", "conveyor:internal"),
    ):
        with pytest.raises(ValidationError):
            await bad()
    assert [s.name for s in await app.schedules.alist()] == ["cleanup", "reset-berlin"]

    changed = await app.schedules.aupdate("reset-berlin", spec="0 3 * * *", payload=None, queue=None, priority=4)
    s = changed.schedule
    assert (s.spec, s.payload, s.queue, s.options.get("priority"), s.timezone) == (
        "0 3 * * *",
        None,
        None,
        4,
        "Europe/Berlin",
    )
    assert (await app.schedules.apause("reset-berlin")).paused
    assert (await app.schedules.adescribe("reset-berlin")).next_run_at is None
    assert not (await app.schedules.aresume("reset-berlin")).paused

    for action in (
        lambda: app.schedules.aupdate("cleanup", spec="@daily"),
        lambda: app.schedules.apause("cleanup"),
        lambda: app.schedules.adelete("cleanup"),
    ):
        with pytest.raises(ScheduleDeclaredInCode, match="declared in code"):
            await action()
    await app.schedules.adelete("reset-berlin")
    with pytest.raises(ScheduleNotFound):
        await app.schedules.adelete("reset-berlin")
    with pytest.raises(ScheduleNotFound):
        await app.schedules.aupdate("nope", spec="@daily")


async def test_the_scheduler_runs_runtime_schedules_and_honours_pause_and_resume(app: Conveyor) -> None:
    t0 = datetime.now(UTC).replace(second=0, microsecond=0)
    scheduler = Scheduler(app, now=t0)
    await app.schedules.acreate("sync", "@every 60s", "sync", {"n": 1})  # made now: counts from now
    await scheduler.tick(t0 + timedelta(minutes=2, seconds=1))
    assert scheduler.enqueued == 2  # t0+1m, t0+2m
    await app.schedules.apause("sync")
    await scheduler.tick(t0 + timedelta(minutes=5, seconds=1))
    assert scheduler.enqueued == 2  # paused
    # resumed at t0+7m30s (the record as `resume` writes it, at the fake clock's time): nothing missed while paused
    # is back-filled, the next occurrence is t0+8m
    record = await app.store.get_schedule("sync")
    assert record is not None and not record.enabled
    await app.store.put_schedule(
        replace(record, enabled=True, updated_at=t0 + timedelta(minutes=7, seconds=30)), create=False
    )
    await scheduler.tick(t0 + timedelta(minutes=8, seconds=1))
    assert scheduler.enqueued == 3
    runs = await app.schedules.aruns("sync")
    assert [r.occurrence for r in runs] == [t0 + timedelta(minutes=m) for m in (8, 2, 1)]
    info = await app.schedules.adescribe("sync")
    assert info.last_run_at == t0 + timedelta(minutes=8)


async def test_trigger_enqueues_one_job_now_and_records_it(app: Conveyor) -> None:
    app.cron("@yearly", "report", {"kind": "annual"}, queue="reports")
    job = await app.schedules.atrigger("report")
    assert (job.task, job.payload, job.queue) == ("report", {"kind": "annual"}, "reports")
    (run,) = await app.schedules.aruns("report")
    assert run.manual and run.job_id == job.id
    assert (await app.schedules.adescribe("report")).last_run_at == run.occurrence
    with pytest.raises(ScheduleNotFound):
        await app.schedules.atrigger("nope")


def test_the_sync_twins(tmp_path: object) -> None:
    app = Conveyor(f"memory://cron-sync-{uuid.uuid4().hex}")
    try:
        app.schedules.create("nightly", "0 1 * * *", "reset", timezone="America/New_York", backfill="latest")
        assert app.schedules.describe("nightly").schedule.backfill.value == "latest"
        app.schedules.update("nightly", backfill_window=timedelta(hours=6))
        assert app.schedules.describe("nightly").schedule.backfill_window == 6 * 3600
        app.schedules.pause("nightly")
        app.schedules.resume("nightly")
        job = app.schedules.trigger("nightly")
        assert [r.job_id for r in app.schedules.runs("nightly")] == [job.id]
        assert [s.name for s in app.schedules.list()] == ["nightly"]
        app.schedules.delete("nightly")
        assert app.schedules.list() == []
    finally:
        app.close()


async def test_a_stored_schedule_that_no_longer_validates_is_left_out_not_fatal(
    app: Conveyor, caplog: pytest.LogCaptureFixture
) -> None:
    from conveyor.model import ScheduleRecord

    await app.store.put_schedule(ScheduleRecord("broken", "@daily", "t", timezone="Gone/Zone"), create=True)
    await app.schedules.acreate("fine", "@every 60s", "t")
    assert [s.name for s in await app.schedules.alist()] == ["fine"]
    scheduler = Scheduler(app)
    await scheduler.tick(datetime.now(UTC) + timedelta(minutes=2))
    await scheduler.tick(datetime.now(UTC) + timedelta(minutes=3))
    assert scheduler.enqueued >= 2
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1  # said once, not at every tick
