"""`conveyor bench`: the project's benchmark, runnable on every store with one command.

What it measures (docs/bench.md has the details and how to read the figures):

1. **enqueue, one call at a time** — N sequential `aenqueue` calls, no worker running: jobs/s.
2. **enqueue, batches** — N jobs through `aenqueue_many` in batches of `--batch-size`: jobs/s.
3. **drain** — the standard `Worker` (default concurrency 10) started on the 2N pending no-op jobs; the clock stops
   when the store reports every one completed: jobs/s.
4. **latency** — with that worker idle, one job enqueued at a time at a steady `--rate` for `--duration` seconds,
   in the same process; enqueue-to-start is from just before the `enqueue` call to the first line of the handler
   (so it includes the enqueue round trip): p50/p90/p99/max in ms.
5. **HTTP** (`--http URL|auto`, instead of 1-4) — `POST /api/jobs/enqueue` from this process over several
   keep-alive connections (httpx) to a server in another process: requests/s and request latency.

Why it is built this way: a benchmark is only useful if anybody can rerun it and trust that it measured Conveyor
and nothing else, so every run uses fresh isolated state (a temporary SQLite file, a new PostgreSQL schema, a new
Redis key prefix) that is removed afterwards, warms up first (connections, prepared statements, imports), checks
that every job really completed, and reports the machine and the store next to the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.app import Conveyor
from conveyor.errors import ConveyorError
from conveyor.loops import run_async
from conveyor.model import DEFAULT_QUEUE, JSON
from conveyor.store import isolated_url, open_store, store_class
from conveyor.store.urls import redact
from conveyor.version import __version__
from conveyor.worker import Worker

NOOP_TASK = "bench:noop"
HTTP_ENQUEUE_PATH = "/api/jobs/enqueue"


class BenchError(ConveyorError):
    """The benchmark could not run or did not finish (a worker stalled, a server refused requests…)."""


@dataclass(slots=True)
class BenchConfig:
    url: str | None = None  # None: a temporary SQLite file
    jobs: int = 10_000
    batch_size: int = 1000
    concurrency: int = 10
    rate: float = 200.0
    duration: float = 5.0
    warmup: int = 1000
    sync_task: bool = False
    http: str | None = None  # base URL, or "auto" to start `conveyor serve` on the benchmark's store
    token: str | None = None
    connections: int = 8
    keep: bool = False
    queue_rate: str | None = None  # a rate limit on the bench queue (e.g. "1000000/s": set, but not binding)
    queue_concurrency: int | None = None  # a concurrency cap on the bench queue
    queue_rate_key: str | None = None  # partition the rate limit per key (e.g. "concurrency_key")
    key_concurrency: int | None = None  # a limit per concurrency key on the bench queue
    keys: int = 0  # >0: the measured jobs carry concurrency_key k<i % keys> and payload {"k": i % keys}
    drain_only: bool = False  # skip the one-at-a-time enqueue and the latency phases (limits: the drain is the cost)


# ---- isolated state ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class IsolatedStore:
    """A fresh store URL for one run and how to remove what it leaves behind."""

    url: str
    kind: str
    cleanup: Callable[[], Awaitable[None]]
    where: str = ""


def store_kind(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    return {"postgres": "postgresql", "rediss": "redis"}.get(scheme, scheme)


def isolate(url: str | None) -> IsolatedStore:
    """Derive a fresh, empty store from the URL the user gave, never touching the data that URL names: the store's
    own isolated space beside it (`conveyor.store.isolated_url`), deleted afterwards with `Store.drop`."""
    base = url or "sqlite://"
    kind = store_kind(base)
    store_class(base)  # an unsupported URL fails here, before anything is made
    label = f"conveyor_bench_{uuid.uuid4().hex[:12]}"
    tmp: str | None = None
    if kind == "sqlite":  # a directory of its own beside the given file (same file system), or in the temp dir
        rest = base.split(":///", 1)[1] if ":///" in base else ""
        path_part = rest.partition("?")[0]
        parent = Path(path_part).parent if path_part and path_part != ":memory:" else Path(tempfile.gettempdir())
        tmp = tempfile.mkdtemp(prefix="conveyor-bench-", dir=parent.resolve())
        label = "bench"
    fresh = isolated_url(base, label, Path(tmp or tempfile.gettempdir()))

    async def cleanup() -> None:
        await open_store(fresh).drop()
        if tmp is not None:
            await asyncio.to_thread(_remove_tree, tmp)

    where = {"sqlite": f"{tmp}/{label}.db", "postgresql": f"schema {label}", "redis": f"key prefix {label}"}
    return IsolatedStore(fresh, kind, cleanup, where.get(kind, "in memory"))


def _remove_tree(path: str) -> None:
    """Remove the benchmark's directory; retry briefly in case a closing SQLite connection drops a -wal/-shm file
    into it after the first pass."""
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.05)


# ---- machine -----------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, JSON]:
    """What the figures were measured on: they mean little without it."""
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": cpu_model,
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "event_loop": _loop_name(),
        "load_average_before": _load(),
    }


def _load() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine explains low figures better than any code change."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _loop_name() -> str:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "asyncio"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


# ---- progress ----------------------------------------------------------------------------------------------------


class _Progress:
    """Rich progress bars on stderr when shown; a no-op otherwise (`--json`, library use)."""

    def __init__(self, show: bool) -> None:
        self._progress: Any = None
        if show:
            self._progress = Progress(
                TextColumn("{task.description:<26}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True, highlight=False),
                refresh_per_second=4,
            )

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        if self._progress is None:
            yield
            return
        with self._progress:
            yield

    def add(self, description: str, total: float) -> Any:
        return None if self._progress is None else self._progress.add_task(description, total=total)

    def update(self, task: Any, completed: float) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, completed=completed)


# ---- the no-op task and what it records --------------------------------------------------------------------------


class _Tracker:
    """Counts handler starts and records enqueue-to-start latencies; wakes the bench when a target is reached.

    Works for both handler kinds: async ones run on the bench's loop, sync ones in the worker's thread pool."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.latencies: list[float] = []

    def reset(self, target: int) -> None:
        with self.lock:
            self.count = 0
            self.target = target
            self.latencies = []
            self.reached = asyncio.Event()

    def hit(self, payload: JSON) -> None:
        now = time.perf_counter()
        with self.lock:
            self.count += 1
            if isinstance(payload, dict) and "t" in payload:
                self.latencies.append(now - float(payload["t"]))
            done = self.count == self.target
        if done:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop:
                self.reached.set()
            else:
                self.loop.call_soon_threadsafe(self.reached.set)


def register_noop(app: Conveyor, tracker: _Tracker, *, sync: bool) -> None:
    if sync:

        def noop_sync(payload: JSON) -> None:
            tracker.hit(payload)

        app.register(NOOP_TASK, noop_sync)
    else:

        async def noop(payload: JSON) -> None:
            tracker.hit(payload)

        app.register(NOOP_TASK, noop)


# ---- phases ------------------------------------------------------------------------------------------------------


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms (nearest-rank on the sorted samples)."""
    if not samples:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    return {
        "p50_ms": _ms(rank(50)),
        "p90_ms": _ms(rank(90)),
        "p99_ms": _ms(rank(99)),
        "max_ms": _ms(ordered[-1]),
        "mean_ms": _ms(statistics.fmean(ordered)),
    }


class _WorkerRun:
    """The standard Worker running as a task of the bench's loop."""

    def __init__(self, app: Conveyor, concurrency: int) -> None:
        self.worker = Worker(app, concurrency=concurrency, install_signal_handlers=False)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.worker.run())
        started = asyncio.ensure_future(self.worker.started.wait())
        await asyncio.wait({self.task, started}, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            started.cancel()
            self.task.result()  # raises what stopped the worker
            raise BenchError("the worker stopped as soon as it started")

    async def stop(self) -> None:
        if self.task is None:
            return
        self.worker.stop()
        await self.task
        self.task = None

    def check(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()
            raise BenchError("the worker stopped unexpectedly")


async def _wait_reached(
    tracker: _Tracker, run: _WorkerRun, timeout: float, on_tick: Callable[[int], None] | None = None
) -> None:
    deadline = time.perf_counter() + timeout
    while not tracker.reached.is_set():
        run.check()
        left = deadline - time.perf_counter()
        if left <= 0:
            raise BenchError(
                f"jobs did not run in time: {tracker.count} of {tracker.target} started within {timeout:.0f} s"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.reached.wait(), min(0.25, left))
        if on_tick is not None:
            on_tick(tracker.count)
    if on_tick is not None:
        on_tick(tracker.count)


async def _wait_completed(app: Conveyor, expected: int, timeout: float) -> None:
    """The handler ran; wait until the store has recorded every completion (completions may be batched)."""
    deadline = time.perf_counter() + timeout
    while True:
        stats = await app.astats()
        if stats.completed >= expected:
            return
        if time.perf_counter() > deadline:
            raise BenchError(
                f"only {stats.completed} of {expected} jobs were recorded completed within {timeout:.0f} s"
            )
        await asyncio.sleep(0.005)


def _specs(keys: int) -> list[dict[str, Any]]:
    """The measured jobs' enqueue specs: all alike, or (`--keys`) cycling through `keys` keys."""
    if keys <= 0:
        return [{"task": NOOP_TASK, "payload": {}}]
    return [{"task": NOOP_TASK, "payload": {"k": i}, "concurrency_key": f"k{i}"} for i in range(keys)]


async def _enqueue_single(app: Conveyor, n: int, bar: _Progress, label: str, keys: int = 0) -> float:
    task = bar.add(label, n)
    specs = _specs(keys)
    start = time.perf_counter()
    for i in range(n):
        spec = specs[i % len(specs)]
        await app.aenqueue(NOOP_TASK, spec["payload"], concurrency_key=spec.get("concurrency_key"))
        if i % 256 == 0:
            bar.update(task, i)
    elapsed = time.perf_counter() - start
    bar.update(task, n)
    return elapsed


async def _enqueue_batches(app: Conveyor, n: int, size: int, bar: _Progress, label: str, keys: int = 0) -> float:
    task = bar.add(label, n)
    specs = _specs(keys)
    done = 0
    start = time.perf_counter()
    while done < n:
        count = min(size, n - done)
        await app.aenqueue_many([specs[(done + i) % len(specs)] for i in range(count)])
        done += count
        bar.update(task, done)
    return time.perf_counter() - start


def _drain_timeout(jobs: int) -> float:
    return max(60.0, jobs / 200)  # generous: a stall fails the run, a slow store does not


async def _run_local(config: BenchConfig, url: str, bar: _Progress) -> dict[str, JSON]:
    tracker = _Tracker(asyncio.get_running_loop())
    app = Conveyor(url)
    register_noop(app, tracker, sync=config.sync_task)
    results: dict[str, JSON] = {}
    try:
        await app.aopen()
        limits = (config.queue_rate, config.queue_concurrency, config.queue_rate_key, config.key_concurrency)
        if any(v is not None for v in limits):
            # Limits on the measured queue (issue 13): with values that do not bind, what checking them costs.
            settings = await app.aupdate_queue(
                DEFAULT_QUEUE,
                rate_limit=config.queue_rate,
                concurrency=config.queue_concurrency,
                rate_key=config.queue_rate_key,
                key_concurrency=config.key_concurrency,
            )
            results["queue_limits"] = {
                "rate_limit": None if settings.rate_limit is None else str(settings.rate_limit),
                "concurrency": settings.concurrency,
                "rate_key": settings.rate_key,
                "key_concurrency": settings.key_concurrency,
            }
        if config.keys:
            results["keys"] = config.keys
        await _phases(app, url, config, tracker, bar, results)
    finally:
        await app.aclose()
        await app.store.close()  # idempotent; also closes a store whose open() was interrupted
    return results


async def _phases(
    app: Conveyor, url: str, config: BenchConfig, tracker: _Tracker, bar: _Progress, results: dict[str, JSON]
) -> None:
    completed_before = 0
    # warm-up: open pools, prepare statements, import the worker and run a few jobs end to end.
    if config.warmup:
        run = _WorkerRun(app, config.concurrency)
        await run.start()
        try:
            tracker.reset(config.warmup)
            singles = min(100, config.warmup)
            task = bar.add("warm-up", config.warmup)
            for _ in range(singles):
                await app.aenqueue(NOOP_TASK, {})
            if config.warmup > singles:
                await app.aenqueue_many([{"task": NOOP_TASK, "payload": {}}] * (config.warmup - singles))
            await _wait_reached(tracker, run, _drain_timeout(config.warmup), lambda c: bar.update(task, c))
            completed_before = config.warmup
            await _wait_completed(app, completed_before, 30)
        finally:
            await run.stop()

    n = config.jobs
    if config.drain_only:  # the drain's first half enqueued in batches, untimed
        await _enqueue_batches(app, n, config.batch_size, bar, "enqueue (batches, for the drain)", config.keys)
    else:
        single = await _enqueue_single(app, n, bar, "enqueue (one at a time)", config.keys)
        results["enqueue_single"] = {"jobs": n, "seconds": round(single, 4), "jobs_per_s": _rate(n, single)}
    batch = await _enqueue_batches(
        app, n, config.batch_size, bar, f"enqueue (batches of {config.batch_size})", config.keys
    )
    results["enqueue_batch"] = {
        "jobs": n,
        "batch_size": config.batch_size,
        "seconds": round(batch, 4),
        "jobs_per_s": _rate(n, batch),
    }

    total = 2 * n
    tracker.reset(total)
    task = bar.add(f"drain (concurrency {config.concurrency})", total)
    run = _WorkerRun(app, config.concurrency)
    start = time.perf_counter()
    await run.start()
    try:
        await _wait_reached(tracker, run, _drain_timeout(total), lambda c: bar.update(task, c))
        await _wait_completed(app, completed_before + total, 60)
        drained = time.perf_counter() - start
        results["drain"] = {
            "jobs": total,
            "concurrency": config.concurrency,
            "seconds": round(drained, 4),
            "jobs_per_s": _rate(total, drained),
        }
        if config.drain_only:
            return

        count = max(1, round(config.rate * config.duration))
        tracker.reset(count)
        interval = 1.0 / config.rate
        task = bar.add(f"latency ({config.rate:g} jobs/s)", count)
        start = time.perf_counter()
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await app.aenqueue(NOOP_TASK, {"t": time.perf_counter()})
            if i % 16 == 0:
                bar.update(task, i)
        sent = time.perf_counter() - start
        await _wait_reached(tracker, run, 60)
        bar.update(task, count)
        results["latency"] = {
            "jobs": count,
            "target_rate": config.rate,
            "achieved_rate": _rate(count, sent),
            "seconds": round(sent, 3),
            **percentiles(tracker.latencies),
        }
        await _wait_completed(app, completed_before + total + count, 60)

        if store_kind(url) != "memory":  # a memory store is private to its process
            results["latency_remote"] = await _remote_latency(app, url, config, tracker, run, bar)
            remote = REMOTE_WARMUP + results_count(results, "latency_remote")
            await _wait_completed(app, completed_before + total + count + remote, 60)
    finally:
        await run.stop()
    final = await app.astats()
    results["final_stats"] = {
        "completed": final.completed,
        "failed": final.failed,
        "pending": final.pending,
        "processing": final.processing,
        "expected_completed": completed_before
        + total
        + results_count(results, "latency")
        + results_count(results, "latency_remote")
        + (REMOTE_WARMUP if "latency_remote" in results else 0),
    }
    if final.failed or final.pending or final.processing:
        raise BenchError(f"the store is not clean after the run: {results['final_stats']}")


REMOTE_WARMUP = 50  # jobs the other process enqueues before the measured ones (its connections, imports)


async def _remote_latency(
    app: Conveyor, url: str, config: BenchConfig, tracker: _Tracker, run: _WorkerRun, bar: _Progress
) -> dict[str, JSON]:
    """The latency phase again, with the enqueues made by another process: what a worker sees when the API (or
    any producer) runs elsewhere. No in-process shortcut applies; the store's cross-process wake-up does the work
    (LISTEN/NOTIFY, Redis blocking pops; SQLite polls). `perf_counter` is the system-wide monotonic clock, so the
    two processes' readings compare."""
    count = max(1, round(config.rate * config.duration))
    tracker.reset(REMOTE_WARMUP + count)
    task = bar.add(f"latency, enqueued by another process ({config.rate:g} jobs/s)", count)
    code = (
        "import sys; from conveyor.bench import remote_enqueue; remote_enqueue(sys.argv[1], *map(float, sys.argv[2:]))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        url,
        str(REMOTE_WARMUP),
        str(count),
        str(config.rate),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    finished = asyncio.ensure_future(proc.communicate())
    deadline = time.perf_counter() + 120 + config.duration
    try:
        while not tracker.reached.is_set():
            run.check()
            if finished.done() and proc.returncode != 0:
                break  # the enqueuing process failed: report it below instead of waiting for jobs never sent
            if time.perf_counter() > deadline:
                raise BenchError(f"jobs did not run in time: {tracker.count} of {tracker.target} started")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tracker.reached.wait()), 0.25)
            bar.update(task, max(0, tracker.count - REMOTE_WARMUP))
        output, _ = await asyncio.wait_for(finished, 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise BenchError(f"the enqueuing process failed (exit {proc.returncode}): {tail}")
    sent = float(output.decode().strip().splitlines()[-1])
    return {
        "jobs": count,
        "warmup_jobs": REMOTE_WARMUP,
        "target_rate": config.rate,
        "achieved_rate": _rate(count, sent),
        "seconds": round(sent, 3),
        **percentiles(tracker.latencies),
    }


def remote_enqueue(url: str, warmup: float, count: float, rate: float) -> None:
    """The other process of the remote latency phase: warm up, then enqueue `count` jobs at `rate`, each carrying
    `perf_counter()` taken just before its enqueue; prints the seconds the paced enqueues took."""

    async def go() -> None:
        app = Conveyor(url)
        try:
            await app.aopen()
            for _ in range(int(warmup)):
                await app.aenqueue(NOOP_TASK, {})
            await asyncio.sleep(0.2)  # let the warm-up jobs run: the worker is idle when measuring starts
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(int(count)):
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await app.aenqueue(NOOP_TASK, {"t": time.perf_counter()})
            print(round(time.perf_counter() - start, 4), flush=True)
        finally:
            await app.aclose()

    run_async(go)


def results_count(results: dict[str, JSON], phase: str) -> int:
    data = results.get(phase)
    return int(data["jobs"]) if isinstance(data, dict) else 0


# ---- HTTP mode ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    """`conveyor serve --no-worker` in its own process, on the benchmark's isolated store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = _free_port()
        self.token = secrets.token_urlsafe(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop(); holds the server's output

    def launch(self) -> None:
        env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": self.token, "CONVEYOR_URL": self.url}
        env.pop("CONVEYOR_APP", None)
        command = [
            sys.executable,
            "-m",
            "conveyor.cli",
            "--store",
            self.url,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-worker",
            "--log-level",
            "WARNING",
        ]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.perf_counter() + 30
        async with httpx.AsyncClient(base_url=self.base, timeout=2) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(f"`conveyor serve` exited with code {self.process.returncode}: {self._tail()}")
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise BenchError(f"`conveyor serve` did not answer /health within 30 s: {self._tail()}")

    def _tail(self) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def _run_http(base: str, token: str | None, config: BenchConfig, bar: _Progress) -> dict[str, JSON]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=config.connections, max_keepalive_connections=config.connections)
    body = {"topic": NOOP_TASK, "payload": {}}
    async with httpx.AsyncClient(base_url=base.rstrip("/"), headers=headers, limits=limits, timeout=30) as client:
        first = await client.post(HTTP_ENQUEUE_PATH, json=body)
        if first.status_code >= 300:
            hint = " (give the admin token with --token)" if first.status_code in (401, 403) else ""
            raise BenchError(f"POST {HTTP_ENQUEUE_PATH} answered {first.status_code}{hint}: {first.text[:300]}")

        async def load(n: int, task: Any) -> tuple[list[float], Counter[int], int]:
            latencies: list[float] = []
            statuses: Counter[int] = Counter()
            errors = 0
            remaining = iter(range(n))

            async def connection() -> None:
                nonlocal errors
                for i in remaining:
                    begin = time.perf_counter()
                    try:
                        response = await client.post(HTTP_ENQUEUE_PATH, json=body)
                        statuses[response.status_code] += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append(time.perf_counter() - begin)
                    if i % 64 == 0:
                        bar.update(task, i)

            await asyncio.gather(*(connection() for _ in range(config.connections)))
            bar.update(task, n)
            return latencies, statuses, errors

        warm = min(config.warmup, 500)
        if warm:
            await load(warm, bar.add("warm-up (HTTP)", warm))
        n = config.jobs
        task = bar.add(f"HTTP enqueue ({config.connections} connections)", n)
        start = time.perf_counter()
        latencies, statuses, errors = await load(n, task)
        elapsed = time.perf_counter() - start
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {
        "requests": n,
        "connections": config.connections,
        "seconds": round(elapsed, 4),
        "requests_per_s": _rate(n, elapsed),
        "ok": ok,
        "errors": errors + n - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **percentiles(latencies),
    }


# ---- entry points ------------------------------------------------------------------------------------------------


async def run_bench_async(config: BenchConfig, *, show_progress: bool = False) -> dict[str, JSON]:
    """Run the benchmark on a fresh store and return the report (what `--json` prints)."""
    if config.http is not None and config.http != "auto":
        return await _with_report(config, None, show_progress)
    isolated = isolate(config.url)
    # SIGTERM cancels the run like Ctrl-C does, so the cleanup below still removes the benchmark's store.
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    handled = False
    if current is not None and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, current.cancel)
            handled = True
    try:
        return await _with_report(config, isolated, show_progress)
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
        if not config.keep:
            await isolated.cleanup()


async def _with_report(config: BenchConfig, isolated: IsolatedStore | None, show_progress: bool) -> dict[str, JSON]:
    bar = _Progress(show_progress)
    report: dict[str, JSON] = {
        "conveyor": __version__,
        "machine": machine_info(),
        "store": {
            "kind": isolated.kind if isolated else "server's",
            "url": redact(isolated.url) if isolated else None,
            "isolated_in": isolated.where if isolated else None,
            "kept": bool(config.keep and isolated),
        },
        "config": {k: v for k, v in asdict(config).items() if k not in ("token", "url")},
    }
    started = time.perf_counter()
    with bar.shown():
        if config.http is None:
            assert isolated is not None
            report.update(await _run_local(config, isolated.url, bar))
        elif config.http == "auto":
            assert isolated is not None
            server = _Server(isolated.url)
            try:
                server.launch()
                await server.wait_ready()
                report["http"] = {"server": "auto", **(await _run_http(server.base, server.token, config, bar))}
            finally:
                await asyncio.to_thread(server.stop)
        else:
            report["http"] = {"server": config.http, **(await _run_http(config.http, config.token, config, bar))}
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    machine = report["machine"]
    if isinstance(machine, dict):
        machine["load_average_after"] = _load()
    return report


def run_bench(config: BenchConfig, *, show_progress: bool = False) -> dict[str, JSON]:
    """Sync entry point used by `conveyor bench`: the same event loop policy as `conveyor worker`."""
    try:
        return run_async(lambda: run_bench_async(config, show_progress=show_progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise BenchError("the benchmark was interrupted (its store was removed)") from None


def print_report(report: dict[str, JSON], console: Console | None = None) -> None:
    """The human view: throughput per phase, the latency percentiles, then the machine and the store (on
    `console`, the CLI's, else a new one on stdout)."""
    console = console or Console(highlight=False)
    config = report.get("config") or {}
    assert isinstance(config, dict)
    table = Table(title="conveyor bench: throughput", title_justify="left")
    table.add_column("phase")
    table.add_column("jobs", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("rate", justify="right")
    phases = (
        ("enqueue, one call per job", "enqueue_single", "jobs/s"),
        (f"enqueue, batches of {config.get('batch_size')}", "enqueue_batch", "jobs/s"),
        (f"drain, Worker concurrency {config.get('concurrency')}", "drain", "jobs/s"),
        ("HTTP POST /api/jobs/enqueue", "http", "req/s"),
    )
    for name, key, unit in phases:
        data = report.get(key)
        if isinstance(data, dict):
            count = data.get("jobs", data.get("requests", 0))
            rate = data.get("jobs_per_s", data.get("requests_per_s", 0))
            table.add_row(name, f"{count:,}", f"{data['seconds']:.2f}", f"[bold]{rate:,.0f}[/] {unit}")
    console.print(table)

    def latency_table(title: str, data: dict[str, Any]) -> None:
        lat = Table(title=title, title_justify="left")
        for column in ("p50", "p90", "p99", "max", "mean"):
            lat.add_column(f"{column} ms", justify="right")
        lat.add_row(*(f"{data[f'{c}_ms']:.2f}" for c in ("p50", "p90", "p99", "max", "mean")))
        console.print(lat)

    latency = report.get("latency")
    if isinstance(latency, dict):
        latency_table(
            f"enqueue → start latency ({latency['jobs']:,} jobs at {latency['achieved_rate']:,.0f}/s)",
            latency,
        )
    remote = report.get("latency_remote")
    if isinstance(remote, dict):
        latency_table(
            f"enqueue → start latency, enqueued by another process ({remote['jobs']:,} jobs at "
            f"{remote['achieved_rate']:,.0f}/s)",
            remote,
        )
    http = report.get("http")
    if isinstance(http, dict):
        latency_table(f"HTTP request latency over {http['connections']} keep-alive connections", http)
        if http.get("errors"):
            console.print(f"[red]{http['errors']} request(s) failed[/]: statuses {http.get('statuses')}")
    machine = report.get("machine") or {}
    store = report.get("store") or {}
    assert isinstance(machine, dict) and isinstance(store, dict)
    console.print(
        f"store: {store.get('kind')} ({store.get('isolated_in') or store.get('url') or 'remote server'}"
        f"{', kept' if store.get('kept') else ', removed afterwards'}) · machine: {machine.get('cores')} cores"
        f" {machine.get('cpu')} · {machine.get('python')} · {machine.get('event_loop')} · "
        f"load {machine.get('load_average_before')} → {machine.get('load_average_after')} · "
        f"conveyor {report.get('conveyor')}",
        markup=False,
        soft_wrap=True,
    )
