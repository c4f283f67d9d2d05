"""A PostgreSQL restart under load: nothing is lost and nothing stays stuck in processing.

The shared server on 5432 is never touched: each test starts a private throwaway cluster (initdb + pg_ctl, as the
`postgres` OS user when run as root) on a free port in a temp dir, restarts it mid-load, and removes it after.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from conveyor.errors import StoreUnavailable, ValidationError
from conveyor.model import Attempt, AttemptOutcome, Finish, JobStatus, NewJob, utcnow
from conveyor.store.postgres import PostgresStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "postgresql" not in os.environ.get("CONVEYOR_TEST_STORES", "postgresql"),
        reason="PostgreSQL not selected in CONVEYOR_TEST_STORES",
    ),
]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    if not found:
        raise RuntimeError(f"PostgreSQL server binary {name!r} not found (install postgresql)")
    return str(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A private PostgreSQL cluster; `restart()` is a fast shutdown and start, like `pg_ctlcluster … restart`."""

    datadir: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        extra = ["-m", "fast"] if action in ("stop", "restart") else []
        self._run(_bin("pg_ctl"), action, "-D", f"{self.datadir}/data", "-w", "-t", "60", "-o", options,
                  "-l", f"{self.datadir}/log", *extra)  # fmt: skip

    def restart(self) -> None:
        self.ctl("restart")

    def crash_restart(self) -> None:
        """`pg_ctl restart -m immediate`: every server process is killed without a checkpoint, and commits made with
        synchronous_commit off whose WAL was not written yet are lost (crash recovery replays only what was)."""
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_bin("pg_ctl"), "restart", "-D", f"{self.datadir}/data", "-w", "-t", "60", "-o", options,
                  "-l", f"{self.datadir}/log", "-m", "immediate")  # fmt: skip


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    datadir = tempfile.mkdtemp(prefix="conveyor-pg-")
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
    c = Cluster(datadir, _free_port())
    try:
        c._run(_bin("initdb"), "-D", f"{datadir}/data", "-U", "postgres", "--auth=trust", "-E", "UTF8")
        c.ctl("start")
        yield c
    finally:
        try:
            c.ctl("stop")
        except Exception:
            pass
        shutil.rmtree(datadir, ignore_errors=True)


def _done(job: Any) -> Finish:
    now = utcnow()
    attempt = Attempt(job.id, job.try_number, AttemptOutcome.COMPLETED, 200, job.started_at or now, now)
    return Finish(job.lease, JobStatus.COMPLETED, attempt=attempt)


async def _until_available(call: Any) -> Any:
    """Retry a store call through an outage, as the worker's completer and fetch loop do."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store never came back"
            await asyncio.sleep(0.05)


async def test_restart_under_store_load_loses_nothing(cluster: Cluster) -> None:
    total, lease = 3000, timedelta(seconds=2)
    store = PostgresStore(f"{cluster.url}?schema=cv_restart", timeout=2.0)
    await store.open()
    enqueued: set[str] = set()
    completed: set[str] = set()
    producing = True
    outages = 0

    async def produce() -> None:
        nonlocal producing
        for start in range(0, total, 30):
            batch = [NewJob.build("noop", {"n": n}) for n in range(start, min(start + 30, total))]
            while True:
                try:
                    await store.enqueue(batch)
                    break
                except ValidationError:  # the earlier try committed before the connection died
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.05)
            enqueued.update(j.id for j in batch)
            await asyncio.sleep(0.005)
        producing = False

    async def consume(worker_id: str) -> None:
        nonlocal outages
        while producing or len(completed) < total:
            try:
                jobs = await store.claim(worker_id, ["default"], 20, lease)
            except StoreUnavailable:
                outages += 1
                await asyncio.sleep(0.05)
                continue
            if not jobs:
                await asyncio.sleep(0.02)
                continue
            applied = await _until_available(lambda jobs=jobs: store.finish([_done(j) for j in jobs]))
            completed.update(j.id for j, ok in zip(jobs, applied, strict=True) if ok)

    async def rescue() -> None:  # the rescuer gives back claims whose answer was lost in the restart
        while producing or len(completed) < total:
            try:
                await store.rescue()
            except StoreUnavailable:
                pass
            await asyncio.sleep(0.5)

    async def restart_midway() -> None:
        while len(completed) < total // 3:  # noqa: ASYNC110 - a plain condition, polled
            await asyncio.sleep(0.01)
        await asyncio.to_thread(cluster.restart)

    try:
        await asyncio.wait_for(
            asyncio.gather(produce(), *(consume(f"w{i}") for i in range(3)), rescue(), restart_midway()), 120
        )
        stats = await _until_available(store.stats)
        assert stats.completed == total, stats
        assert stats.processing == 0 and stats.pending == 0, stats
        assert completed == enqueued
    finally:
        await store.close()


async def test_restart_under_worker_load_every_job_completes(cluster: Cluster) -> None:
    from conveyor import Conveyor
    from conveyor.worker import Worker

    app = Conveyor(f"{cluster.url}?schema=cv_restart_worker", timeout=2.0)
    await app.aopen()
    ran: list[int] = []

    @app.task("noop")
    async def noop(payload: int) -> None:
        ran.append(payload)
        await asyncio.sleep(0.001)

    total = 2000
    await app.aenqueue_many([{"task": "noop", "payload": n} for n in range(total // 2)])
    worker = Worker(app, concurrency=10, lease=3.0, install_signal_handlers=False, rescue_interval=1.0)
    runner = asyncio.create_task(worker.run())
    try:
        while len(ran) < total // 4:  # noqa: ASYNC110 - a plain condition, polled
            await asyncio.sleep(0.01)
        restart = asyncio.create_task(asyncio.to_thread(cluster.restart))
        for n in range(total // 2, total, 50):  # enqueue the rest through the outage (retrying like an API would)
            specs = [{"task": "noop", "payload": k} for k in range(n, n + 50)]
            await _until_available(lambda specs=specs: app.aenqueue_many(specs))
        await restart
        deadline = time.monotonic() + 90
        while True:
            stats = await _until_available(app.astats)
            if stats.completed >= total:
                break
            assert time.monotonic() < deadline, f"not every job completed: {stats}"
            await asyncio.sleep(0.2)
        assert stats.processing == 0 and stats.pending == 0, stats
        assert set(ran) == set(range(total))
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 60)
        await app.aclose()


async def test_lazy_store_opened_while_down_works_once_the_database_is_up(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.ctl, "stop")
    store = PostgresStore(f"{cluster.url}?schema=cv_lazy", lazy=True, timeout=1.0)
    with pytest.warns(RuntimeWarning, match="lazily"):
        await store.open()
    try:
        with pytest.raises(StoreUnavailable):
            await store.enqueue([NewJob.build("noop")])
        await asyncio.to_thread(cluster.ctl, "start")
        (job,) = await _until_available(lambda: store.enqueue([NewJob.build("noop")]))  # migrates on first use
        await asyncio.wait_for(store.listening.wait(), 30)  # the listener found the database too
        (claimed,) = await store.claim("w", ["default"], 1, timedelta(seconds=30))
        assert claimed.id == job.id
        assert await store.finish([_done(claimed)]) == [True]
    finally:
        await store.close()
