"""Tasks and a worker entry point for the multi-process worker conformance tests.

    python -m tests.conformance.worker_tasks URL [--concurrency N] [--lease S] [--grace S] [--ready FILE]
                                                [--queues A,B]

runs a standard Worker (signal handlers on: SIGTERM/SIGINT shut it down gracefully) with the tasks below, and
touches the ready file once it is claiming. Side effects are lines appended (O_APPEND, one write per line, so
lines from concurrent processes never interleave) to files named in the payloads: the tests count them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from conveyor import Conveyor, JobContext
from conveyor.worker import Worker


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


def register(app: Conveyor) -> None:
    @app.task("append")
    def append(payload: dict[str, Any], ctx: JobContext) -> str:
        """Record one execution of the job (the exactly-once check counts these lines)."""
        if payload.get("sleep"):
            time.sleep(payload["sleep"])
        append_line(payload["path"], f"{ctx.job.id} {os.getpid()} {ctx.try_number}")
        return "ok"

    @app.task("block_once")
    async def block_once(payload: dict[str, Any], ctx: JobContext) -> str:
        """The first try announces itself and hangs (the test kills its worker); later tries complete."""
        append_line(payload["log"], f"start {ctx.try_number} {os.getpid()}")
        if ctx.try_number == 1:
            await asyncio.sleep(600)
        append_line(payload["log"], f"done {ctx.try_number} {os.getpid()}")
        return f"completed by {os.getpid()}"

    @app.task("hold_first")
    async def hold_first(payload: dict[str, Any], ctx: JobContext) -> str:
        """Like block_once, with the time of each start (the recovery test measures kill -> rerun)."""
        append_line(payload["log"], f"start {ctx.try_number} {os.getpid()} {time.time():.6f}")
        if ctx.try_number == 1:
            await asyncio.sleep(600)
        return f"completed by {os.getpid()}"

    @app.task("cron_tick")
    def cron_tick(payload: dict[str, Any], ctx: JobContext) -> str:
        """A cron occurrence ran (the occurrence is in the job's id; the leader test counts these lines)."""
        append_line(payload["log"], f"{ctx.job.id} {os.getpid()}")
        return "ticked"

    @app.task("fenced")
    async def fenced(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Record which claim runs the job (job id, fencing token, pid, try number) and return it: the crash test
        compares every applied result with the claim its attempt record is stored under."""
        token = ctx.job.lease_token
        append_line(payload["log"], f"{ctx.job.id} {token} {os.getpid()} {ctx.try_number}")
        await asyncio.sleep(payload.get("sleep", 0))
        return {"token": token, "pid": os.getpid(), "try": ctx.try_number}

    @app.task("sleep")
    async def sleep(payload: dict[str, Any], ctx: JobContext) -> str:
        append_line(payload["log"], f"start {ctx.job.id} {ctx.try_number}")
        await asyncio.sleep(payload["seconds"])
        append_line(payload["log"], f"done {ctx.job.id} {ctx.try_number}")
        return "slept"


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--ready")
    parser.add_argument("--queues", default="default", help="comma-separated queues to claim from")
    parser.add_argument("--cron-log", help="register an @every 1s cron whose jobs append to this file")
    parser.add_argument("--leader-log", help="append 'lead|stop ROLE PID TIME' when this process's roles change")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    app = Conveyor(args.url, lease=timedelta(seconds=args.lease))
    register(app)
    if args.cron_log:
        app.cron("@every 1s", "cron_tick", {"log": args.cron_log}, name="tick")
    worker = Worker(
        app,
        queues=args.queues.split(","),
        concurrency=args.concurrency,
        grace_period=args.grace,
        poll_interval=args.poll,
        install_signal_handlers=True,
    )
    if args.leader_log:
        log_path = args.leader_log
        changed = worker.leadership_changed

        def record(role: str, leading: bool) -> None:
            changed(role, leading)
            append_line(log_path, f"{'lead' if leading else 'stop'} {role} {os.getpid()} {time.time():.6f}")

        worker.leadership_changed = record  # type: ignore[method-assign]
    run = asyncio.create_task(worker.run())
    if await worker.wait_started(timeout=60) and args.ready:
        _write(args.ready, worker.worker_id)
    await run
    await app.aclose()


if __name__ == "__main__":
    asyncio.run(main())
