"""A scheduler process for tests/conformance/test_cron_processes.py: `python -m tests.conformance.cron_scheduler_child
URL START SKEW GO OUT`. It declares the test's code schedule, waits for the GO file, then runs a Scheduler (no
election: every process schedules) on a fake clock — START plus SKEW seconds (the processes' clocks disagree) —
ticking every 20 s for 10 minutes, jumping one hour ahead, and ticking 10 more minutes; then writes what it
enqueued and what it found enqueued already to OUT."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from conveyor import Conveyor, StoreUnavailable
from conveyor.maintenance import Scheduler


async def tick(scheduler: Scheduler, clock: datetime) -> None:
    """One tick; a store that is busy (a loaded machine) is tried again, as the service's loop would next tick."""
    for attempt in range(50):
        try:
            await scheduler.tick(clock)
            return
        except StoreUnavailable as exc:
            print(f"tick at {clock.isoformat()}: {exc} (try {attempt + 1})", file=sys.stderr)
            await asyncio.sleep(0.2)
    raise SystemExit("the store stayed unavailable")


async def main(url: str, start: datetime, skew: float, go: Path, out: Path) -> None:
    app = Conveyor(url)
    app.cron("*/5 * * * *", "sync", {"from": "code"}, timezone="Europe/Berlin")
    await app.aopen()
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(go.exists):
            if time.monotonic() > deadline:
                raise SystemExit("no GO file")
            await asyncio.sleep(0.01)
        clock = start + timedelta(seconds=skew)
        scheduler = Scheduler(app, now=clock)
        for phase in range(2):
            for _ in range(30):
                await tick(scheduler, clock)
                clock += timedelta(seconds=20)
            if phase == 0:
                clock += timedelta(hours=1)  # the clock jumps
        report = json.dumps({"enqueued": scheduler.enqueued, "duplicates": scheduler.duplicates})
        await asyncio.to_thread(out.write_text, report)
    finally:
        await app.aclose()


if __name__ == "__main__":
    url, start, skew, go, out = sys.argv[1:6]
    asyncio.run(main(url, datetime.fromisoformat(start), float(skew), Path(go), Path(out)))
