"""The fault run's engine: a backlog, worker processes killed at random, the store crash-restarted, then the audit.

`scripts/faultrun.py` is its command line (and docs/faults.md its manual); `tests/faults/test_faultrun.py` runs a
short version in the suite. Everything runs inside a `Lab`, so servers and workers are gone afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import StoreUnavailable
from conveyor.model import NewJob
from conveyor.store import Store, open_store
from tests.faults.fault_app import TASK
from tests.faults.lab import Lab
from tests.faults.ledger import Kill, analyse, read_side_logs, snapshot
from tests.faults.servers import PrivatePostgres, PrivateRedis
from tests.faults.workers import WorkerProcess

STORES = ("sqlite", "postgresql", "redis")


@dataclass
class Options:
    jobs: int = 15_000
    workers: int = 3
    concurrency: int = 10
    lease: float = 10.0
    kill_every: tuple[float, float] = (5.0, 10.0)
    job_seconds: tuple[float, float] = (0.1, 0.3)
    crash_at: float = 0.4
    max_attempts: int = 25
    redis_appendfsync: str = "everysec"
    pg_fsync: bool = True
    pg_fast_worker_commits: bool = True
    timeout: float = 1800.0
    seed: int | None = None


@dataclass
class Run:
    store: str
    lab: Lab
    options: Options
    url: str = ""
    store_options: dict[str, object] = field(default_factory=dict)
    server: PrivatePostgres | PrivateRedis | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    generation: list[int] = field(default_factory=list)
    retired: list[WorkerProcess] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    crashes: list[tuple[float, float]] = field(default_factory=list)  # (crash began, server back)
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"[{self.store} {time.strftime('%H:%M:%S')}] {text}"
        self.events.append(line)
        print(line, flush=True)


def _start_store(run: Run) -> None:
    o = run.options
    if run.store == "sqlite":
        run.url = f"sqlite:///{run.lab.dir}/faultrun.db"  # the lab dir is absolute: sqlite:////tmp/...
    elif run.store == "postgresql":
        pg = PrivatePostgres(run.lab, fsync=o.pg_fsync)
        pg.start()
        run.server = pg
        run.url = f"{pg.url()}?schema=conveyor"
        run.store_options = {"fast_worker_commits": o.pg_fast_worker_commits}
    else:
        redis = PrivateRedis(run.lab, appendfsync=o.redis_appendfsync)
        redis.start()
        run.server = redis
        run.url = f"{redis.url()}?prefix=faultrun"


def _spawn(run: Run, slot: int) -> WorkerProcess:
    run.generation[slot] += 1
    worker_id = f"w{slot}.{run.generation[slot]}-{run.lab.id}"
    o = run.options
    return WorkerProcess(
        run.lab, run.url, worker_id, lease=o.lease, concurrency=o.concurrency, store_options=run.store_options
    )


async def _retry(call: Any, what: str, run: Run, limit: float = 120.0) -> Any:
    """Call the store through its own outages (the crash-restart), as an application would."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the store stayed unavailable for {limit:.0f}s") from None
            await asyncio.sleep(0.2)


async def _enqueue_backlog(run: Run, store: Store, rng: random.Random) -> list[str]:
    o = run.options
    ids: list[str] = []
    lo, hi = o.job_seconds
    for start in range(0, o.jobs, 1000):
        batch = [
            NewJob.build(TASK, {"s": round(rng.uniform(lo, hi), 3)}, max_attempts=o.max_attempts)
            for _ in range(min(1000, o.jobs - start))
        ]
        jobs = await store.enqueue(batch)
        ids.extend(j.id for j in jobs)
    return ids


async def _crash_store(run: Run) -> None:
    began = time.time()
    if isinstance(run.server, PrivatePostgres):
        run.note("PostgreSQL: pg_ctl restart -m immediate")
        await asyncio.to_thread(run.server.crash_restart)
    elif isinstance(run.server, PrivateRedis):
        run.note(f"Redis: kill -9 (appendonly, appendfsync {run.options.redis_appendfsync}) and restart")
        await asyncio.to_thread(run.server.crash_restart)
    run.crashes.append((began, time.time()))
    run.note(f"store back after {time.time() - began:.1f}s")


async def _leads_maintenance(store: Store, worker_id: str) -> bool:
    """Whether the worker leads maintenance (runs the rescuer) now, by the store's election (stores without
    elections, before leader election existed: every worker rescued, so none is "the" leader)."""
    leaders = getattr(store, "leaders", None)
    if leaders is None:
        return False
    try:
        roles = await leaders()
    except StoreUnavailable:
        return False
    return any(r.name == "maintenance" and r.holder == worker_id and r.expires_in > 0 for r in roles)


async def _drive(run: Run, store: Store, ids: list[str], rng: random.Random) -> dict[str, Any]:
    """Kill workers until the backlog has drained, crash the store once, then wait for the last rescues."""
    o = run.options
    total = len(ids)
    began = time.monotonic()
    next_kill = began + rng.uniform(*o.kill_every)
    crashed = run.server is None  # SQLite: no server to crash
    last_print = 0.0
    drained_at: float | None = None
    while True:
        now = time.monotonic()
        if now - began > o.timeout:
            run.note(f"timeout after {o.timeout:.0f}s: stopping with jobs unfinished")
            break
        try:
            stats = await store.stats()
        except StoreUnavailable:
            await asyncio.sleep(0.5)
            continue
        done = stats.completed + stats.failed + stats.cancelled
        if now - last_print >= 10:
            last_print = now
            run.note(f"{done}/{total} finished, {stats.pending} pending, {stats.processing} processing")
        if not crashed and done >= o.crash_at * total:
            crashed = True
            await _crash_store(run)
            continue
        # A random worker, once every worker is running: start-up takes seconds on a loaded machine, and killing
        # workers faster than they come up would only measure start-up (the interval counts from then).
        if not all(w.started() for w in run.workers):
            next_kill = max(next_kill, now + o.kill_every[0])
        elif stats.pending > 0 and now >= next_kill:
            slot = rng.randrange(len(run.workers))
            victim = run.workers[slot]
            leader = await _leads_maintenance(store, victim.worker_id)
            at = victim.kill()
            run.kills.append(Kill(at, victim.worker_id, victim.pid, leader))
            run.retired.append(victim)
            run.workers[slot] = _spawn(run, slot)
            role = " (the maintenance leader)" if leader else ""
            run.note(f"SIGKILL {victim.worker_id}{role} (pid {victim.pid}); started {run.workers[slot].worker_id}")
            next_kill = now + rng.uniform(*o.kill_every)
        if stats.pending == 0 and stats.processing == 0:
            drained_at = now
            run.note(f"drained: {done}/{total} finished in {now - began:.0f}s")
            break
        await asyncio.sleep(0.25)
    return {"seconds": round((drained_at or time.monotonic()) - began, 1), "drained": drained_at is not None}


async def run_store(kind: str, options: Options, rng: random.Random) -> dict[str, Any]:
    with Lab() as lab:
        run = Run(kind, lab, options)
        _start_store(run)
        store = open_store(run.url, **run.store_options)
        await store.open()
        try:
            run.note(f"store {run.url}; enqueueing {options.jobs} jobs")
            ids = await _enqueue_backlog(run, store, rng)
            run.generation = [0] * options.workers
            run.workers = [_spawn(run, slot) for slot in range(options.workers)]
            timing = await _drive(run, store, ids, rng)
            # a worker must survive the store's crash and every outage by itself: none may have exited unasked
            exited = [f"{w.worker_id} (exit {w.proc.returncode})" for w in run.workers if not w.alive()]
            for w in run.workers:  # graceful: finish running jobs, flush completions (refusals get logged)
                w.stop(timeout=options.lease * 3)
            refused = sum(len(w.refused()) for w in (*run.retired, *run.workers))
            runs = read_side_logs(lab.dir / "side")
            stored = await _retry(lambda: snapshot(store, ids), "reading the jobs back", run)
            report = analyse(ids, runs, stored, run.kills)
            summary = {
                "store": kind,
                **report.summary(options.lease),
                "refused_completions": refused,
                "store_crashes": len(run.crashes),
                "workers_exited_unasked": len(exited),
                **timing,
            }
            examples = report.examples(10)
            if exited:
                examples["workers_exited_unasked"] = exited
            return {"summary": summary, "examples": examples, "kills": report.per_kill, "events": run.events}
        finally:
            for w in (*run.workers, *run.retired):
                if w.alive():
                    w.kill()
            with contextlib.suppress(Exception):
                await store.close()
