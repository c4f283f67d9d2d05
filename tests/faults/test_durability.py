"""What each store's durability setting promises against a crash, checked by experiment (docs/durability.md).

- PostgreSQL `fast_worker_commits` (the default): claims and finishes commit with `synchronous_commit = off`, so a
  crash of the database server forgets those that the WAL writer had not yet written; enqueues are never
  forgotten. With `fast_worker_commits=False` nothing acknowledged is forgotten.
- Redis with the append-only file: a kill -9 of the server loses nothing acknowledged, whatever `appendfsync`
  (Redis writes the AOF before it replies; only fsync, which protects against a machine crash, differs). Without
  AOF a restart loses everything.
- SQLite: a kill -9 of the process that committed loses nothing, whatever `synchronous` (WAL commits are in the
  kernel before COMMIT returns; `synchronous` only matters for a machine crash).

A machine crash (power loss) cannot be made here; those rows of the table come from the engines' documentation.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from conveyor.errors import StoreUnavailable
from conveyor.model import Attempt, AttemptOutcome, Finish, Job, JobStatus, NewJob, utcnow
from conveyor.store import Store, open_store
from conveyor.store.postgres import PostgresStore
from tests.faults.lab import Lab
from tests.faults.servers import PrivatePostgres, PrivateRedis
from tests.faults.workers import REPO

pytestmark = pytest.mark.slow
LEASE = timedelta(seconds=60)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


def _done(job: Job) -> Finish:
    now = utcnow()
    attempt = Attempt(job.id, job.try_number, AttemptOutcome.COMPLETED, 200, now, now, worker_id="w")
    return Finish(job.lease, JobStatus.COMPLETED, attempt=attempt, result="ok")


async def _until_available(call, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store never came back"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("fast", [True, False], ids=["fast_worker_commits", "durable_worker_commits"])
async def test_postgres_server_crash_forgets_only_fast_worker_commits(lab: Lab, fast: bool) -> None:
    """The WAL writer is frozen (SIGSTOP) while the worker's calls commit, then killed with SIGKILL — a crash of
    a server process, after which PostgreSQL resets shared memory (its WAL buffers with it) and recovers from
    the WAL on disk. Freezing it makes the window deterministic: otherwise it writes asynchronous commits out
    within `wal_writer_delay` (200 ms), which is how long the window is in production."""
    pg = PrivatePostgres(lab)
    pg.start()
    store = PostgresStore(f"{pg.url()}?schema=durability", fast_worker_commits=fast, listen=False, timeout=2.0)
    await store.open()
    try:
        a, b = await store.enqueue([NewJob.build("t"), NewJob.build("t")])
        walwriter = await _walwriter_pid(pg.url())
        os.kill(walwriter, signal.SIGSTOP)
        try:
            claimed = await store.claim("w", ["default"], 2, LEASE)  # claim a and b
            (c,) = await store.enqueue([NewJob.build("t")])  # a durable commit: flushes the WAL written before it
            assert await store.finish([_done(j) for j in claimed if j.id == a.id]) == [True]  # complete a
            (c_claimed,) = await store.claim("w", ["default"], 1, LEASE)  # claim c
            assert c_claimed.id == c.id
        finally:
            os.kill(walwriter, signal.SIGKILL)  # the server crashes; the postmaster recovers from the WAL
        await _recovered(pg.url(), walwriter)
        after = {j.id: await _until_available(lambda j=j: store.get_job(j.id)) for j in (a, b, c)}
        attempts_a = await store.attempts(a.id)
    finally:
        await store.close()
    assert after[b.id].status is JobStatus.PROCESSING  # its claim was flushed by c's durable enqueue
    if fast:
        # a's completion is forgotten: it is processing again under its old lease (rescued once that expires,
        # then run a second time), and its attempt record is gone. c's claim is forgotten: pending, try 0.
        assert after[a.id].status is JobStatus.PROCESSING and after[a.id].try_number == 1
        assert attempts_a == []
        assert after[c.id].status is JobStatus.PENDING and after[c.id].try_number == 0
    else:
        assert after[a.id].status is JobStatus.COMPLETED and [x.status_code for x in attempts_a] == [200]
        assert after[c.id].status is JobStatus.PROCESSING and after[c.id].try_number == 1


async def _recovered(url: str, old_walwriter: int) -> None:
    """Wait until the postmaster has been through crash recovery: it answers again, with a new WAL writer."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if await _walwriter_pid(url) != old_walwriter:
                return
        except (psycopg.OperationalError, AssertionError):
            pass
        assert time.monotonic() < deadline, "PostgreSQL did not recover from the crash"
        await asyncio.sleep(0.1)


async def _walwriter_pid(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'")
        row = await cur.fetchone()
    assert row is not None, "no walwriter process"
    return int(row[0])


@pytest.mark.parametrize("appendfsync", ["always", "everysec", "no", None], ids=lambda v: f"appendfsync={v}")
async def test_redis_kill_9_keeps_every_acknowledged_write_with_aof(lab: Lab, appendfsync: str | None) -> None:
    server = PrivateRedis(lab, appendfsync=appendfsync)
    server.start()
    store = open_store(f"{server.url()}?prefix=durability")
    await store.open()
    try:
        enqueued: list[str] = []
        for _ in range(50):  # many small writes, the last acknowledged just before the kill
            enqueued.extend(j.id for j in await store.enqueue([NewJob.build("t") for _ in range(20)]))
        claimed = await store.claim("w", ["default"], 100, LEASE)
        assert all(await store.finish([_done(j) for j in claimed[:50]]))
        server.kill()
        server.start()
        stats = await _until_available(store.stats)
    finally:
        await store.close()
    if appendfsync is None:
        assert stats.total == 0, stats  # no AOF (and no snapshot): a restart starts empty
    else:
        assert (stats.total, stats.completed, stats.processing) == (len(enqueued), 50, 50), stats


_SQLITE_WRITER = """
import asyncio, sys
from conveyor.model import NewJob
from conveyor.store import open_store
async def main():
    store = open_store(sys.argv[1])
    await store.open()
    while True:
        jobs = await store.enqueue([NewJob.build("t") for _ in range(10)])
        print(len(jobs), flush=True)   # acknowledged: COMMIT has returned
asyncio.run(main())
"""


def _write_until_killed(url: str, batches: int) -> int:
    """Run a process that enqueues batches of 10 on `url`; SIGKILL it after `batches` acknowledgements (it keeps
    writing meanwhile, so the kill lands mid-write). Returns the jobs acknowledged."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    proc = subprocess.Popen([sys.executable, "-c", _SQLITE_WRITER, url], env=env, stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        assert proc.stdout is not None
        for _ in range(batches):
            line = proc.stdout.readline()
            assert line, "the writer process died"
            acknowledged += int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return acknowledged


@pytest.mark.parametrize("synchronous", ["OFF", "NORMAL", "FULL"])
async def test_sqlite_kill_9_of_the_writer_keeps_every_acknowledged_commit(lab: Lab, synchronous: str) -> None:
    url = f"sqlite:///{lab.dir}/durability.db?synchronous={synchronous}"
    acknowledged = await asyncio.to_thread(_write_until_killed, url, 200)
    store: Store = open_store(url)
    await store.open()
    try:
        stats = await store.stats()
    finally:
        await store.close()
    # every acknowledged batch is there (more may have committed after the last line we read), none in part
    assert stats.pending >= acknowledged and stats.pending % 10 == 0, (acknowledged, stats)
