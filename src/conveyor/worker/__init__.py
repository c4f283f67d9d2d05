"""The worker: claims jobs into a pool of slots, runs them, reports their outcomes, and shuts down gracefully.

Its parts, one job per module (after River's producer.go, internal/jobexecutor and internal/jobcompleter):

- `producer`   — when to claim and how much: the claim loop, hand-off offers, prefetch, the timer to the next
  due job, wake-ups;
- `executor`   — the slots: running a job, timeouts (watchdog), stopping a job (cancel, lost lease, shutdown);
- `completer`  — batched finishes, retried until they land; refused reports logged;
- `heartbeat`  — lease extension and the worker's registration;
- `lifecycle`  — `Worker` itself: settings, start, shutdown, the local cancel fast path, elected maintenance;
- `state`, `outage`, `signals` — what the parts share: run state, store-outage logging, started/stopped flags
  and SIGTERM/SIGINT.

Per-job overhead is kept small: one context object, one task, no store round trip of its own.
"""

from __future__ import annotations

from typing import Unpack

from conveyor.runtime import SupportsRuntime
from conveyor.tasks import WorkerOptions
from conveyor.worker.completer import MAX_FLUSH
from conveyor.worker.executor import FAST_JOB
from conveyor.worker.lifecycle import Worker
from conveyor.worker.producer import BUFFER_WAIT
from conveyor.worker.signals import Signal

__all__ = ["BUFFER_WAIT", "FAST_JOB", "MAX_FLUSH", "Signal", "Worker", "run"]


def run(app: SupportsRuntime, **options: Unpack[WorkerOptions]) -> None:
    """Run a worker in the foreground (convenience for scripts): `conveyor.worker.run(app, concurrency=20)`."""
    app.runtime.app.run_worker(**options)  # the facade's run_worker: signals, the portal loop of a sync app
