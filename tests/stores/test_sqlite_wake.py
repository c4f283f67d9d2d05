"""SQLite wake-ups across processes (store/sqlite/wake.py, docs/sqlite.md): real processes on one database file,
each binding its Unix datagram socket in `<db>-wake/`.

Every waiter here waits far longer (30 s, or a worker's 30 s poll interval) than a wake-up can plausibly take even
on a busy machine, and the assertions only say "woken well before that": a test passes by a wake-up, never by the
timeout, and no bound is tight enough to flake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conformance.worker_support import read_lines, running_worker, spawn_worker, stop_process, wait_until

from conveyor import Conveyor
from conveyor.model import JobFilter, JobStatus, NewJob
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.wake import CHECK_NS, SUFFIX, WakeHub, hub_for, wake_directory

pytestmark = pytest.mark.slow

WAIT = 30.0  # a waiter's timeout (and the workers' poll interval): returning well before it proves a wake-up
WOKEN = 20.0  # "well before": room for a child interpreter to start on a loaded machine


@pytest.fixture
async def db() -> AsyncIterator[str]:
    """A database path short enough for its wake sockets to sit beside it (tmp_path can be too long)."""
    directory = tempfile.mkdtemp(prefix="cw-")
    try:
        yield os.path.join(directory, "jobs.db")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def url_of(path: str) -> str:
    return f"sqlite:///{path}"


async def opened(path: str) -> SQLiteStore:
    store = SQLiteStore(url_of(path))
    await store.open()
    return store


async def listen(store: SQLiteStore) -> None:
    """Bind this process's socket (a store's first wait does), and let its horizon pass: until then waits end early
    on purpose (senders may not know the socket yet), which would make a test pass without a wake-up."""
    await store.wait_for_jobs(0.01)
    await asyncio.sleep(max(0.0, store._hub.horizon - time.monotonic()) + 0.01)


async def timed_wait(store: SQLiteStore) -> float:
    start = time.monotonic()
    await store.wait_for_jobs(WAIT)
    return time.monotonic() - start


async def start_wait(store: SQLiteStore) -> asyncio.Task[float]:
    """A waiter that is registered when this returns (a listening store's wait registers on its first step)."""
    task = asyncio.create_task(timed_wait(store))
    await asyncio.sleep(0)
    return task


# A child that waits on the database: binds, announces "ready" once its waiter is registered, and reports how long
# the wait took. `--kill-me` instead announces its socket and waits for SIGKILL (a process that dies unclosed).
WAITER = r"""
import asyncio, sys, time
from conveyor.store.sqlite import SQLiteStore

async def main(url, mode):
    store = SQLiteStore(url)
    await store.open()
    await store.wait_for_jobs(0.01)
    await asyncio.sleep(max(0.0, store._hub.horizon - time.monotonic()) + 0.01)
    if mode == "--kill-me":
        print("ready", store._hub.address, flush=True)
        await asyncio.sleep(600)
    start = time.monotonic()
    task = asyncio.ensure_future(store.wait_for_jobs(float(mode)))
    await asyncio.sleep(0)
    print("ready", flush=True)
    await task
    print(round(time.monotonic() - start, 3), flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

# A child that changes the database once and exits: `enqueue` a job, or `run_now` / `requeue` a given job.
ACTOR = r"""
import asyncio, sys
from conveyor.model import NewJob
from conveyor.store.sqlite import SQLiteStore

async def main(url, action, arg):
    store = SQLiteStore(url)
    await store.open()
    try:
        if action == "enqueue":
            await store.enqueue([NewJob.build(arg)])
        else:
            await getattr(store, action)(arg)
    finally:
        await store.close()

asyncio.run(main(*sys.argv[1:4]))
"""


async def run_child(script: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()


async def start_child(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 60) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"the child ended early: {err.decode()}")
    return line.decode().strip()


def exists(path: str) -> bool:
    return os.path.exists(path)


def realpath(path: str) -> str:
    return os.path.realpath(path)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def read(path: str) -> str:
    return Path(path).read_text()


def sockets_in(directory: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.endswith(".sock"))
    except FileNotFoundError:
        return []


# ---- store ↔ store ------------------------------------------------------------------------------------------------


async def test_an_enqueue_here_wakes_a_waiter_in_another_process(db: str) -> None:
    store = await opened(db)
    child = await start_child(WAITER, url_of(db), str(WAIT))
    try:
        assert await read_line(child) == "ready"
        assert len(sockets_in(db + SUFFIX)) == 1  # the child's socket, beside the database
        await store.enqueue([NewJob.build("t")])
        elapsed = float(await read_line(child, WAIT + 30))
        assert elapsed < WOKEN
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await store.close()
    assert not exists(db + SUFFIX)  # the child closed its socket; the last one out removes the directory


@pytest.mark.parametrize("action", ["enqueue", "run_now", "requeue"])
async def test_a_change_in_another_process_wakes_a_waiter_here(db: str, action: str) -> None:
    store = await opened(db)
    try:
        arg = "from-elsewhere"
        if action == "run_now":  # a job due in an hour becomes due now
            (job,) = await store.enqueue([NewJob.build("t", run_at=datetime.now(UTC) + timedelta(hours=1))])
            arg = job.id
        elif action == "requeue":  # a cancelled job goes back to pending
            (job,) = await store.enqueue([NewJob.build("t")])
            await store.cancel(job.id)
            arg = job.id
        await listen(store)
        waiter = await start_wait(store)
        await run_child(ACTOR, url_of(db), action, arg)
        elapsed = await asyncio.wait_for(waiter, WAIT + 10)
        assert elapsed < WOKEN
        claimed = await store.claim("w", ["default"], 10, timedelta(seconds=30))
        assert len(claimed) == 1  # woken for a job that is there to claim
    finally:
        await store.close()


async def test_waits_just_after_binding_end_early(db: str) -> None:
    """Senders may not know a fresh socket yet: waits end by the hub's horizon, so the caller claims again soon."""
    store = await opened(db)
    try:
        assert await asyncio.wait_for(timed_wait(store), WAIT + 10) < WOKEN
        assert store._hub.address is not None and store._hub.horizon > 0
    finally:
        await store.close()


# ---- workers ------------------------------------------------------------------------------------------------------


async def test_a_worker_process_runs_jobs_enqueued_here_long_before_its_poll_interval(db: str, tmp_path: Path) -> None:
    app = Conveyor(url_of(db))
    await app.aopen()
    out = tmp_path / "runs.log"
    proc = spawn_worker(url_of(db), "--poll", str(WAIT), "--ready", str(tmp_path / "ready"))
    try:
        await wait_until(lambda: (tmp_path / "ready").exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        for n in range(1, 4):  # the first may be found by the worker's start-up claim; the rest need a wake-up
            start = time.monotonic()
            await app.aenqueue("append", {"path": str(out)})
            await wait_until(lambda n=n: len(read_lines(out)) >= n, WAIT + 10)
            assert time.monotonic() - start < WOKEN
    finally:
        assert stop_process(proc) == 0
        await app.aclose()


async def test_a_worker_here_runs_jobs_enqueued_by_another_process(db: str) -> None:
    app = Conveyor(url_of(db))
    ran: list[str] = []

    @app.task("from-elsewhere")
    def record(payload: object) -> None:
        ran.append("yes")

    await app.aopen()
    try:
        async with running_worker(app, poll_interval=WAIT):
            for n in range(1, 3):
                start = time.monotonic()
                await run_child(ACTOR, url_of(db), "enqueue", "from-elsewhere")
                await wait_until(lambda n=n: len(ran) >= n, WAIT + 10)
                assert time.monotonic() - start < WOKEN
    finally:
        await app.aclose()


# ---- stale sockets, forks, long paths, fallback ---------------------------------------------------------------------


async def test_a_stale_socket_of_a_killed_process_is_removed_by_the_next_sender(db: str) -> None:
    store = await opened(db)
    child = await start_child(WAITER, url_of(db), "--kill-me")
    try:
        line = await read_line(child)
        stale = line.split()[1]
        assert os.path.dirname(stale) == db + SUFFIX and exists(stale)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        assert exists(stale)  # nobody closed it
        (job,) = await store.enqueue([NewJob.build("t")])  # works, and cleans up
        assert not exists(stale)
        assert (await store.get_job(job.id)) is not None
        # And waking keeps working with the directory it left behind.
        await listen(store)
        waiter = await start_wait(store)
        await run_child(ACTOR, url_of(db), "enqueue", "after-the-crash")
        assert await asyncio.wait_for(waiter, WAIT + 10) < WOKEN
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await store.close()


async def test_a_stale_socket_that_is_no_socket_at_all_does_not_break_enqueue(db: str) -> None:
    """Names that look like ours but are plain files (or sockets of another kind) are left alone."""
    store = await opened(db)
    try:
        os.mkdir(db + SUFFIX)
        odd = os.path.join(db + SUFFIX, "12345-0123abcd.sock")
        write(odd, "not a socket")
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream.bind(os.path.join(db + SUFFIX, "12346-0123abcd.sock"))
        try:
            await store.enqueue([NewJob.build("t")])
            assert exists(odd)
        finally:
            stream.close()
    finally:
        await store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
async def test_a_forked_child_wakes_its_parent(db: str) -> None:
    """After fork the child has the parent's hub object but not its socket or thread: it must send to the parent,
    not skip the parent's socket as its own."""
    store = await opened(db)
    try:
        await listen(store)
        waiter = await start_wait(store)
        pid = os.fork()
        if pid == 0:  # the child: a fresh loop (on a thread: this one is inside the parent's) and a fresh store
            outcome: list[int] = [1]

            async def enqueue() -> None:
                child = SQLiteStore(url_of(db))
                await child.enqueue([NewJob.build("from-the-fork")])
                await child.close()
                outcome[0] = 0

            try:
                thread = threading.Thread(target=asyncio.run, args=(enqueue(),))
                thread.start()
                thread.join(60)
            finally:
                os._exit(outcome[0])
        _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert await asyncio.wait_for(waiter, WAIT + 10) < WOKEN
    finally:
        await store.close()


async def test_a_database_path_too_long_for_a_socket_address_uses_the_temp_dir(tmp_path: Path) -> None:
    path = os.path.join(realpath(str(tmp_path)), "d" * 80, "jobs.db")
    os.mkdir(os.path.dirname(path))
    directory = wake_directory(realpath(path))
    assert directory is not None and directory.startswith(tempfile.gettempdir())
    assert len(os.fsencode(directory)) + 25 <= 104
    store = await opened(path)
    child = await start_child(WAITER, url_of(path), str(WAIT))
    try:
        assert await read_line(child) == "ready"
        assert len(sockets_in(directory)) == 1 and not exists(path + SUFFIX)
        await store.enqueue([NewJob.build("t")])
        assert float(await read_line(child, WAIT + 30)) < WOKEN
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await store.close()
    assert not exists(directory)


async def test_when_the_wake_directory_cannot_be_made_everything_still_works_by_polling(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    write(db + SUFFIX, "in the way")  # a regular file where the directory should be
    waiter_store = await opened(db)
    other = await opened(db)
    try:
        with caplog.at_level(logging.INFO, logger="conveyor.store.sqlite"):
            await listen(waiter_store)
            await listen(other)
        warnings = [r for r in caplog.records if "cross-process wake-ups are off" in r.getMessage()]
        assert len(warnings) == 1  # logged once per file and process
        assert hub_for(realpath(db)).address is None

        # Waiters of this process are still woken by enqueues of this process…
        waiter = await start_wait(waiter_store)
        await other.enqueue([NewJob.build("t")])
        assert await asyncio.wait_for(waiter, WAIT + 10) < WOKEN

        # …enqueues elsewhere work, and are found by polling…
        await run_child(ACTOR, url_of(db), "enqueue", "from-elsewhere")
        await waiter_store.wait_for_jobs(0.2)  # times out: nothing can wake it
        page = await waiter_store.list_jobs(JobFilter(status=JobStatus.PENDING))
        assert page.total == 2

        # …and a worker here runs them on its poll interval.
        app = Conveyor(url_of(db))
        ran: list[str] = []

        @app.task("from-elsewhere")
        def record(payload: object) -> None:
            ran.append("yes")

        @app.task("t")
        def t(payload: object) -> None:
            ran.append("t")

        await app.aopen()
        try:
            async with running_worker(app, poll_interval=0.2):
                await run_child(ACTOR, url_of(db), "enqueue", "from-elsewhere")
                await wait_until(lambda: len(ran) == 3, 30)
        finally:
            await app.aclose()
        assert read(db + SUFFIX) == "in the way"
    finally:
        await waiter_store.close()
        await other.close()


async def test_close_removes_the_socket_and_the_directory(db: str) -> None:
    a, b = await opened(db), await opened(db)  # two stores of one process share one socket
    await listen(a)
    await listen(b)
    assert len(sockets_in(db + SUFFIX)) == 1
    await a.close()
    assert len(sockets_in(db + SUFFIX)) == 1  # b still waits here
    await b.close()
    assert not exists(db + SUFFIX)


# ---- the hub on its own (two hubs of one file in this process stand for two processes) ---------------------------


async def test_a_sender_finds_a_new_socket_within_its_check_interval_and_never_wakes_itself(db: str) -> None:
    write(db, "")
    sender, receiver = WakeHub(realpath(db)), WakeHub(realpath(db))
    sender.notify_others()  # looks now: nobody listens yet
    assert receiver.listen()
    try:
        await asyncio.sleep(2 * CHECK_NS / 1e9)  # the sender's look is out of date: it looks again
        woken = asyncio.create_task(receiver.local.wait(WAIT))
        await asyncio.sleep(0)
        sender.notify_others()
        assert await asyncio.wait_for(woken, WAIT + 5) is True

        alone = asyncio.create_task(receiver.local.wait(0.3))
        await asyncio.sleep(0)
        receiver.notify_others()  # its own socket is not a peer
        assert await alone is False
    finally:
        receiver.unlisten()
    assert not exists(db + SUFFIX)


async def test_a_peer_that_never_reads_costs_nothing_but_its_own_queue(db: str) -> None:
    """A stopped process keeps its socket bound and its queue full: sends to it fail with EAGAIN, quietly, and the
    other peers are still woken (each peer has its own connected socket, so its unread datagrams are its own)."""
    write(db, "")
    os.mkdir(db + SUFFIX)
    stuck = []
    for n in range(40):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(db + SUFFIX, f"{100000 + n}-0000abcd.sock"))
        stuck.append(sock)
    sender, receiver = WakeHub(realpath(db)), WakeHub(realpath(db))
    try:
        assert receiver.listen()
        await asyncio.sleep(2 * CHECK_NS / 1e9)
        for _ in range(30):  # every stuck queue fills up (ten or so datagrams each)
            sender.notify_others()
        woken = asyncio.create_task(receiver.local.wait(WAIT))
        await asyncio.sleep(0)
        sender.notify_others()
        assert await asyncio.wait_for(woken, WAIT + 5) is True
        assert len(sockets_in(db + SUFFIX)) == 41  # nobody mistook them for stale ones
    finally:
        receiver.unlisten()
        for sock in stuck:
            sock.close()
