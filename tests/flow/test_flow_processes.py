"""Issue 13's "Done when" proofs with real processes, on every shared store (SQLite, PostgreSQL, Redis): four
`conveyor worker` processes drain a queue limited to 10/s at 10/s ± 10 % over 30 s (timed by the store's own
started_at of every claim), while a second queue's caps — 2 per concurrency key, 6 for the queue — are never
exceeded in samples read from the store every few milliseconds, across a pause and resume that keep them.

One test per store: under pytest-xdist (`-n`) the three 30 s windows run at once on different workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from conveyor.model import JobFilter, JobStatus, NewJob, QueueChange, QueueSettings, RateLimit
from conveyor.store import Store, open_store
from tests.conftest import backend, selected_stores

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WINDOW = 30.0  # seconds the rate is measured over
RATE = 10  # per second
KEY_CAP, QUEUE_CAP, KEYS = 2, 6, 5
STORES = [s for s in ("sqlite", "postgresql", "redis") if s in selected_stores()]


def start_worker(url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_URL": url,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "conveyor.cli", "--app", "tests.flow.flow_app:make_app", "worker",
            "-q", "rated", "-q", "keyed", "--concurrency", "4", "--id", name, "--no-maintenance",
            "--grace-period", "5"]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


async def started_times(store: Store, queue: str) -> list[datetime]:
    out: list[datetime] = []
    after = None
    while True:
        page = await store.list_jobs(JobFilter(queue=queue), limit=500, after=after)
        out += [j.started_at for j in page.items if j.started_at is not None]
        if page.next is None:
            return sorted(out)
        after = page.next


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.timeout(180)
async def test_four_worker_processes_hold_the_rate_limit_and_the_caps(kind: str, tmp_path: Path) -> None:
    url = backend(kind).fresh_url(tmp_path)
    store = open_store(url)
    await store.open()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await store.update_queue_settings("default", "rated", QueueChange(rate_limit=RateLimit(RATE, 1.0)))
        await store.update_queue_settings(
            "default", "keyed", QueueChange(key_concurrency=KEY_CAP, concurrency=QUEUE_CAP)
        )
        backlog = int((WINDOW + 8) * RATE)
        await store.enqueue([NewJob.build("flow:noop", {"n": i}, queue="rated") for i in range(backlog)])
        await store.enqueue(
            [
                NewJob.build("flow:sleep", {"s": 0.15}, queue="keyed", concurrency_key=f"k{i % KEYS}")
                for i in range(1500)
            ]
        )
        procs = [start_worker(url, f"{kind}-w{i}", tmp_path / f"w{i}.log") for i in range(4)]
        began = time.monotonic()
        first_start: float | None = None  # when the first rated job was seen started (workers take a while to boot)
        samples = 0
        most_per_key = 0
        most_in_queue = 0
        paused_at = resumed_at = None
        while first_start is None or time.monotonic() - first_start < WINDOW + 2:
            assert time.monotonic() - began < 120, "the workers never started"
            if first_start is None and samples % 20 == 0:
                done = await store.list_jobs(JobFilter(queue="rated", status=JobStatus.COMPLETED), limit=1)
                if done.items:
                    first_start = time.monotonic()
            running = await store.list_jobs(JobFilter(queue="keyed", status=JobStatus.PROCESSING), limit=100)
            per_key = Counter(j.concurrency_key for j in running.items)
            most_per_key = max(most_per_key, *per_key.values(), 0)
            most_in_queue = max(most_in_queue, len(running.items))
            assert max(per_key.values(), default=0) <= KEY_CAP, per_key
            assert len(running.items) <= QUEUE_CAP, len(running.items)
            samples += 1
            elapsed = time.monotonic() - (first_start or began)
            if first_start is not None and paused_at is None and elapsed > 10:
                paused_at = elapsed
                await store.update_queue_settings("default", "keyed", QueueChange(paused=True))
            elif resumed_at is None and paused_at is not None and elapsed > paused_at + 1.5:
                resumed_at = elapsed
                kept = await store.update_queue_settings("default", "keyed", QueueChange(paused=False))
                assert kept == QueueSettings("default", "keyed", concurrency=QUEUE_CAP, key_concurrency=KEY_CAP)
            await asyncio.sleep(0.01)
        assert resumed_at is not None
        assert samples > 200 and most_per_key == KEY_CAP and most_in_queue >= QUEUE_CAP - 1  # the caps were reached
        for p in procs:
            assert p.poll() is None, (tmp_path / "w0.log").read_text()[-2000:]

        starts = await started_times(store, "rated")
        t0 = starts[0]
        in_window = [s for s in starts if (s - t0).total_seconds() < WINDOW]
        assert (starts[-1] - t0).total_seconds() >= WINDOW, "the queue ran dry, or the workers stopped"
        rate = len(in_window) / WINDOW
        assert RATE * 0.9 <= rate <= RATE * 1.1, f"{kind}: {len(in_window)} claims in {WINDOW} s = {rate:.2f}/s"
        print(f"{kind}: {len(in_window)} starts in {WINDOW:.0f} s ({rate:.2f}/s); {samples} samples, "
              f"max {most_per_key} per key, {most_in_queue} in the queue")  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        await store.close()
        await backend(kind).cleanup(url)
