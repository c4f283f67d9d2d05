"""Handlers for the process-isolation tests (tests/test_isolation.py, tests/conformance/test_worker_isolation.py).

They live at the top of a module because a child process imports them by name. Each records what it did in files
named by its payload (one line per event, O_APPEND), so the tests can see runs that happened in other processes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any

from conveyor import JobContext
from conveyor.context import JobCancelled


def note(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def hang_first_try(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Try 1 records its pid and hangs (the worker kills it at its timeout); later tries report whether the
    earlier tries' processes are still alive at the moment they run."""
    note(payload["log"], f"start {ctx.attempt} {os.getpid()} {time.time():.6f}")
    if ctx.attempt == 1:
        time.sleep(600)
    with open(payload["log"]) as f:
        earlier = [int(line.split()[2]) for line in f if line.split()[1] != str(ctx.attempt)]
    return {"pid": os.getpid(), "earlier_alive": [alive(pid) for pid in earlier]}


def hang(payload: dict[str, Any], ctx: JobContext) -> None:
    note(payload["log"], f"start {os.getpid()}")
    time.sleep(600)


def crash(payload: dict[str, Any]) -> int:
    how = payload["how"]
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segv":
        ctypes.string_at(0)
    if how == "raise":
        raise ValueError("bad input in the child")
    return os.getpid()


def until_stopped(payload: dict[str, Any], ctx: JobContext) -> str:
    """Waits for the stop signal (a graceful shutdown) and stops early."""
    note(payload["log"], f"start {os.getpid()}")
    if ctx.wait_cancelled_sync(60):
        note(payload["log"], f"stopping {ctx.cancel_reason}")
        raise JobCancelled("stopping early: the worker shuts down")
    return "never stopped"


def overrun(payload: dict[str, Any], ctx: JobContext) -> str:
    """A thread handler that ignores its timeout on try 1 (sleeps past it) and is quick afterwards."""
    note(payload["log"], f"start {ctx.attempt} {time.time():.6f}")
    if ctx.attempt == 1:
        time.sleep(payload["seconds"])
    note(payload["log"], f"end {ctx.attempt} {time.time():.6f}")
    return "done"
