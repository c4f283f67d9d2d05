"""Process isolation: sync handlers run in child processes that the worker can kill (hard timeouts, cancel).

A plain function running in a thread cannot be stopped: past its timeout it runs on, and only its flag
(`ctx.cancelled`) can ask it to stop. A task registered with `isolation="process"` (or a worker started with
`isolation="process"`) runs in a `ProcessPool` instead, as Celery's `time_limit`, RQ's fork and BullMQ's sandboxed
processors do: on a timeout, a cancel or a lost lease the worker kills the child (SIGKILL) and waits for it to be
gone before it reports the try, so a retry never overlaps the run it replaces.

How the pool is built, and why (docs/choices.md has the comparison with pebble and billiard):

* **Children come from a forkserver** (`multiprocessing` start method "forkserver"). The worker process has
  threads (the store's, the thread pool's), and forking a threaded process can copy a held lock into the child;
  a forkserver is a clean single-threaded process that forks each child, with the handlers' modules imported once
  in advance (preloaded), so a replacement child is ready in milliseconds. Handlers travel to the children by
  name (pickled by reference, as multiprocessing requires: module-level functions), never their payloads.
* **One socket per child, no shared locks.** Each child talks to the worker over its own socketpair, with one
  length-prefixed JSON frame per message. A child that dies — killed by us, by the OOM killer, a segfault,
  `os._exit` — breaks only its own socket: the worker reads end-of-file, collects the exit status, records a
  failed try with it ("killed by signal 11 (SIGSEGV: Segmentation fault)") and starts a replacement. A shared
  queue guarded by a cross-process lock (pebble, billiard, `concurrent.futures`) is what a killed child can leave
  locked or half-written, breaking the whole pool.
* **Payloads and results cross as JSON**, the form they are stored in; the child gets a `JobContext` with the job
  (id, attempt, try number), the handler's app (`ctx.app`, found in the handler's module, opened lazily in the
  child), and a cancellation flag: it turns true when the worker starts a graceful shutdown, so a handler can hurry
  or stop early (raise `JobCancelled`: the job is handed back) before the grace period ends and the child is killed.
* **A child dies with its worker.** Its only link to the worker is its socket: when the worker is gone (even by
  kill -9) the child reads end-of-file and exits at once, so an orphan never runs on beside the job's next try.
* **Size.** One child per slot (the worker's concurrency), started when the worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from conveyor.context import JobCancelled, JobContext
from conveyor.errors import Fail, Retry, ValidationError
from conveyor.model import JSON, Job, JobStatus, encode_result
from conveyor.runtime import Runtime
from conveyor.tasks import ISOLATIONS, PROCESS, THREAD, takes_context, validate_isolation

__all__ = ["ISOLATIONS", "PROCESS", "THREAD", "ChildDied", "ProcessPool", "RemoteError", "validate_isolation"]

log = logging.getLogger("conveyor.isolation")

_HEADER = struct.Struct("!I")
_KILL_WAIT = 10.0  # seconds to wait for a killed child to be reaped (SIGKILL cannot be ignored)


class ChildDied(Exception):
    """The child process running a handler died before answering (a crash, the OOM killer, os._exit)."""

    def __init__(self, task: str, how: str) -> None:
        super().__init__(f"the process running task {task!r} died: {how}")
        self.how = how


class RemoteError(Exception):
    """An exception a handler raised in its child process, carried back as its type name, text and traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def describe_exit(code: int | None) -> str:
    """A child's exit status in words: 'killed by signal 9 (SIGKILL: Killed)', 'exited with status 3'."""
    if code is None:
        return "it stopped answering"
    if code < 0:
        number = -code
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        text = signal.strsignal(number) or name
        hint = " — the kernel's out-of-memory killer sends this too" if number == signal.SIGKILL else ""
        return f"killed by signal {number} ({name}: {text}){hint}"
    return f"exited with status {code}"


# ---- the wire: one length-prefixed JSON frame per message ---------------------------------------------------------


def _pack(message: Mapping[str, JSON]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return _HEADER.pack(len(body)) + body


def _job_wire(job: Job) -> dict[str, JSON]:
    return {
        "id": job.id,
        "namespace": job.namespace,
        "queue": job.queue,
        "task": job.task,
        "payload": job.payload,
        "priority": job.priority,
        "run_at": job.run_at.isoformat(),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "try_number": job.try_number,
        "created": job.created.isoformat(),
        "updated": job.updated.isoformat(),
        "user_id": job.user_id,
        "group_key": job.group_key,
        "unique_key": job.unique_key,
        "started_at": None if job.started_at is None else job.started_at.isoformat(),
        "worker_id": job.worker_id,
    }


def _job_from_wire(d: Mapping[str, Any]) -> Job:
    def at(key: str) -> datetime:
        return datetime.fromisoformat(d[key])

    return Job(
        id=d["id"],
        namespace=d["namespace"],
        queue=d["queue"],
        task=d["task"],
        payload=d["payload"],
        status=JobStatus.PROCESSING,
        priority=d["priority"],
        run_at=at("run_at"),
        attempts=d["attempts"],
        max_attempts=d["max_attempts"],
        try_number=d["try_number"],
        created=at("created"),
        updated=at("updated"),
        user_id=d["user_id"],
        group_key=d["group_key"],
        unique_key=d["unique_key"],
        started_at=None if d["started_at"] is None else at("started_at"),
        worker_id=d["worker_id"],
    )


def _error_wire(exc: BaseException) -> dict[str, JSON]:
    out: dict[str, JSON] = {
        "ok": False,
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    if isinstance(exc, Retry):
        out["retry"] = {"delay": exc.delay, "reason": exc.reason, "status_code": exc.status_code}
    elif isinstance(exc, Fail):
        try:
            result = json.loads(encode_result(exc.result))
        except Exception:
            result = None
        out["fail"] = {"reason": exc.reason, "status_code": exc.status_code, "result": result}
    elif type(exc).__name__ == "JobCancelled":
        out["cancelled"] = True
    return out


def _error_from_wire(reply: Mapping[str, Any]) -> BaseException:
    if "retry" in reply:
        r = reply["retry"]
        return Retry(r["delay"], reason=r["reason"], status_code=r["status_code"])
    if "fail" in reply:
        f = reply["fail"]
        return Fail(f["reason"], status_code=f["status_code"], result=f["result"])
    if reply.get("cancelled"):
        return JobCancelled(str(reply.get("message") or "stopped on request"))
    return RemoteError(str(reply["type"]), str(reply["message"]), str(reply["traceback"]))


# ---- the child --------------------------------------------------------------------------------------------------


def _child_main(sock: socket.socket, handlers: dict[str, Callable[..., Any]], worker_id: str) -> None:
    """A child's life: run the handlers it is asked to, one at a time, until its socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the worker decides
    apps = {name: _find_app(fn, name) for name, fn in handlers.items()}
    with_context = {name: takes_context(fn) for name, fn in handlers.items()}
    requests: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    current: list[JobContext] = []
    lock = threading.Lock()

    def read_exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                os._exit(0)  # the worker is gone (even kill -9): never run on beside the job's next try
            data += chunk
        return data

    def reader() -> None:
        while True:
            (size,) = _HEADER.unpack(read_exactly(_HEADER.size))
            message = json.loads(read_exactly(size))
            if message["op"] == "run":
                requests.put(message)
            elif message["op"] == "stop":
                with lock:
                    for ctx in current:
                        ctx.request_cancel(message["reason"])

    threading.Thread(target=reader, name="conveyor-child-reader", daemon=True).start()
    while True:
        message = requests.get()
        job = _job_from_wire(message["job"])
        ctx = JobContext(job, apps.get(job.task), worker_id)
        with lock:
            current[:] = [ctx]
        try:
            fn = handlers[job.task]
            value = fn(job.payload, ctx) if with_context[job.task] else fn(job.payload)
            reply: dict[str, JSON] = {"ok": True, "result": encode_result(value)}
        except BaseException as exc:  # everything the handler raises goes back to the worker to classify
            reply = _error_wire(exc)
        with lock:
            current.clear()
        sock.sendall(_pack(reply))


def _find_app(fn: Callable[..., Any], name: str) -> Any:
    """The Conveyor app the handler was registered with, as the child's import of its module created it: a
    module-level object whose runtime (`app.runtime`) registered the task."""
    for value in getattr(fn, "__globals__", {}).values():
        try:
            runtime = getattr(value, "runtime", None)
        except Exception:  # a module global with a strange __getattr__ is not an app
            continue
        if isinstance(runtime, Runtime) and runtime.app is value and name in runtime.tasks:
            return value
    return None


# ---- the worker's side --------------------------------------------------------------------------------------------


class _Child:
    def __init__(self, process: multiprocessing.process.BaseProcess, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.job_id: str | None = None

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)

    async def send(self, message: Mapping[str, JSON]) -> None:
        assert self.writer is not None
        self.writer.write(_pack(message))
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        assert self.reader is not None
        (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
        reply: dict[str, Any] = json.loads(await self.reader.readexactly(size))
        return reply

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()


class ProcessPool:
    """`size` warm child processes that run `handlers` (task name → module-level function).

    `await pool.start()`, then `await pool.run(job, ctx)` from any number of tasks (at most `size` run at once;
    more wait for a free child). Cancelling a `run` kills its child (SIGKILL) and waits until it is gone."""

    def __init__(self, handlers: Mapping[str, Callable[..., Any]], size: int, *, worker_id: str = "") -> None:
        if size < 1:
            raise ValueError(f"a process pool needs at least one child, got {size}")
        self.handlers = dict(handlers)
        self.size = size
        self.worker_id = worker_id
        self._context = multiprocessing.get_context("forkserver")
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closed = False
        self.started_children = 0
        """How many children this pool has started (replacements included), for tests and logs."""

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that every handler can reach a child, then start the children (in a thread: starting the fork
        server the first time imports the handlers' modules, which may take a moment)."""
        self._check_picklable()
        modules = sorted({fn.__module__ for fn in self.handlers.values()} - {"__main__"})
        with contextlib.suppress(Exception):  # only effective before the fork server first starts
            self._context.set_forkserver_preload(["conveyor.isolation", *modules])
        children = await asyncio.gather(*(asyncio.to_thread(self._spawn_blocking) for _ in range(self.size)))
        for child in children:
            await self._adopt(child)

    def _check_picklable(self) -> None:
        for name, fn in self.handlers.items():
            try:
                pickle.dumps(fn)
            except Exception as exc:
                raise ValidationError(
                    f"task {name!r} runs with isolation='process', so its handler must be a module-level function "
                    f"that a child process can import by name ({getattr(fn, '__qualname__', fn)!r} cannot be: "
                    f"{exc}); define it at the top of a module, or run it with isolation='thread'",
                    field="isolation",
                ) from None

    def _spawn_blocking(self) -> tuple[multiprocessing.process.BaseProcess, socket.socket]:
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=_child_main,
            args=(theirs, self.handlers, self.worker_id),
            name="conveyor-child",
            daemon=True,
        )
        try:
            process.start()
        finally:
            theirs.close()
        return process, ours

    async def _adopt(self, spawned: tuple[multiprocessing.process.BaseProcess, socket.socket]) -> None:
        child = _Child(*spawned)
        await child.connect()
        self.started_children += 1
        self._children.add(child)
        if self._closed:
            await self._kill(child)
            return
        self._idle.put_nowait(child)

    def _replace(self) -> None:
        """Start a child in place of one that died or was killed (in the background; `run` waits for it)."""
        if self._closed:
            return

        async def spawn() -> None:
            delay = 0.1
            while not self._closed:
                try:
                    await self._adopt(await asyncio.to_thread(self._spawn_blocking))
                    return
                except Exception as exc:  # e.g. out of processes: try again, a run waits meanwhile
                    log.warning("could not start a child process for isolated tasks (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

        task = asyncio.get_running_loop().create_task(spawn(), name="conveyor-child-spawn")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def close(self) -> None:
        """Kill every child (running ones too: the worker has handed their jobs back by now)."""
        self._closed = True
        for task in list(self._spawning):
            task.cancel()
        for child in list(self._children):
            await self._kill(child)

    # ---- running a job -------------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return sorted(c.pid for c in self._children)

    async def run(self, job: Job, ctx: JobContext) -> JSON:
        """Run `job`'s handler in a child; return its result, or raise what it raised (Retry, Fail, JobCancelled
        as themselves, anything else as RemoteError, a dead child as ChildDied). Cancelled: the child is killed."""
        child = await self._idle.get()
        child.job_id = job.id
        try:
            await child.send({"op": "run", "job": _job_wire(job)})
            if ctx.cancel_reason is not None:  # asked to stop before it started: let the handler see it
                await child.send({"op": "stop", "reason": ctx.cancel_reason})
            reply = await child.receive()
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(child))
            self._replace()
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            code = await self._reap(child)
            self._replace()
            raise ChildDied(job.task, describe_exit(code)) from None
        child.job_id = None
        self._idle.put_nowait(child)
        if reply["ok"]:
            return json.loads(reply["result"])
        raise _error_from_wire(reply)

    def notify_stop(self, job_id: str, reason: str) -> None:
        """Set `ctx.cancelled` in the child running `job_id` (a graceful shutdown began); it is not killed."""
        for child in self._children:
            if child.job_id == job_id and child.writer is not None and not child.writer.is_closing():
                with contextlib.suppress(Exception):
                    child.writer.write(_pack({"op": "stop", "reason": reason}))

    async def _kill(self, child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        await self._reap(child)

    async def _reap(self, child: _Child) -> int | None:
        """Wait until the child is gone (its exit status collected); forget it."""
        self._children.discard(child)
        child.close()
        process = child.process
        if process.exitcode is None:  # the sentinel turns readable when the child's exit status is known
            loop = asyncio.get_running_loop()
            gone: asyncio.Future[None] = loop.create_future()
            fd = process.sentinel
            loop.add_reader(fd, _resolve, gone)
            try:
                await asyncio.wait_for(gone, _KILL_WAIT)
            except TimeoutError:
                log.error("child process %s did not exit within %g s", child.pid, _KILL_WAIT)
            finally:
                loop.remove_reader(fd)
        return process.exitcode


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def isolated_handlers(specs: Mapping[str, Any], default: str) -> dict[str, Callable[..., Any]]:
    """The sync, non-transactional tasks that run in child processes under a worker whose default is `default`."""
    return {
        name: spec.fn
        for name, spec in specs.items()
        if not spec.is_async and not spec.transactional and (spec.isolation or default) == PROCESS
    }


def is_isolated(spec: Any, default: str) -> bool:
    return spec is not None and not spec.is_async and not spec.transactional and (spec.isolation or default) == PROCESS


__all__ = [
    "ISOLATIONS",
    "PROCESS",
    "THREAD",
    "ChildDied",
    "ProcessPool",
    "RemoteError",
    "describe_exit",
    "is_isolated",
    "isolated_handlers",
    "validate_isolation",
]

if sys.platform == "win32":  # pragma: no cover
    raise ImportError("process isolation needs a POSIX system (forkserver, socketpair)")
