"""The app the fault runs' worker processes load: `conveyor --app tests.faults.fault_app:make_app worker …`.

Its one task, `fault:work`, writes down every execution in a side log *outside* the store — a line when the
handler starts and one when it returns — and returns a result that names the run. The ledger (ledger.py) later
compares these independent records with what the store says happened: which run's completion was accepted
(the job's result), and which attempts were recorded. A store that applies a completion to the wrong claim, loses
a job, or accepts two completions shows up there, whatever the worker or the store believe.

Environment: CONVEYOR_URL (the store), FAULTLAB_DIR (where the side logs go: one file per process),
FAULTLAB_STORE_OPTIONS (a JSON object of store keyword options, e.g. {"fast_worker_commits": false}).
Lines are written with one `os.write` on an O_APPEND descriptor: they reach the kernel before the handler goes on,
so a SIGKILL of the worker loses none, and lines of concurrent handlers never interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import Any

from conveyor import Conveyor, JobContext

TASK = "fault:work"


def lease_token(ctx: JobContext) -> str:
    """The claim's fencing token as the handler sees it (the try number until the store has a token of its own)."""
    job: Any = ctx.job
    lease: Any = job.lease
    token = getattr(lease, "token", None)
    return str(token if token is not None else job.try_number)


class SideLog:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.fd = os.open(os.path.join(directory, f"side-{os.getpid()}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.pid = os.getpid()

    def write(self, kind: str, ctx: JobContext, run: str) -> None:
        fields = (kind, f"{time.time():.6f}", ctx.job.id, str(ctx.try_number), lease_token(ctx), ctx.worker_id or "",
                  str(self.pid), run)  # fmt: skip
        os.write(self.fd, ("\t".join(fields) + "\n").encode())


def make_app() -> Conveyor:
    options = json.loads(os.environ.get("FAULTLAB_STORE_OPTIONS") or "{}")
    app = Conveyor(os.environ.get("CONVEYOR_URL"), **options)
    side = SideLog(os.environ.get("FAULTLAB_DIR", "."))

    @app.task(TASK, timeout=600)
    async def work(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Sleep payload["s"] seconds, writing the run down before and after. With payload["gate"], every try
        after the first also waits until that file exists: a test holds a rescued job's rerun open with it."""
        run = secrets.token_hex(6)
        side.write("S", ctx, run)
        await asyncio.sleep(float(payload.get("s", 0.0)))
        gate = payload.get("gate")
        if gate and ctx.try_number > 1:
            deadline = time.monotonic() + 300
            # a file another process creates: polled
            while not os.path.exists(gate) and time.monotonic() < deadline:  # noqa: ASYNC110, ASYNC240
                await asyncio.sleep(0.05)
        side.write("E", ctx, run)
        return {"run": run, "worker": ctx.worker_id, "pid": side.pid, "try": ctx.try_number, "token": lease_token(ctx)}

    return app
