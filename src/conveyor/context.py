"""The context a handler receives next to its payload: which job and try this is, and how to learn it should stop.

A worker creates one context per claimed job, so it is kept cheap: a handful of slots and no events or loggers
until a handler asks for them. Cancellation has one source of truth, `cancel_reason`; the asyncio and threading
events are created lazily and set from it, which makes the signal usable both from `async def` handlers (on the
worker's loop) and from plain functions running in the worker's thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.model import JSON, Job

if TYPE_CHECKING:
    from conveyor.runtime import Runtime, SupportsRuntime

_task_logger = logging.getLogger("conveyor.task")


class JobCancelled(ConveyorError):
    """Raised by `ctx.raise_if_cancelled()` so a sync handler can stop with one line when asked to."""

    status_code = 499
    code = "cancelled"


class JobContext:
    """What a handler knows about its run.

    - `job`: the claimed `Job` (status processing, `attempts` already counts this try);
    - `try_number` / `attempt`: the fencing token and the 1-based attempt number towards `max_attempts`;
    - `worker_id`, `app` (the `Conveyor` app the task was registered on, to enqueue follow-up jobs), `runtime`;
    - `connection`: the open database connection of a transactional handler (PostgreSQL), else None;
    - `cancelled` (sync or async) / `cancel_event` (async) / `wait_cancelled()` (sync): the job should stop —
      a cancel was requested, the task timed out, the worker is shutting down, or its lease was lost.
      Async handlers are also cancelled outright (CancelledError); sync handlers must look at the flag.
    """

    __slots__ = (
        "_async_event",
        "_logger",
        "_thread_event",
        "cancel_reason",
        "connection",
        "deadline",
        "job",
        "run_task",
        "runtime",
        "worker_id",
    )

    def __init__(self, job: Job, app: SupportsRuntime | None = None, worker_id: str | None = None) -> None:
        self.job = job
        self.runtime: Runtime | None = app.runtime if app is not None else None
        self.worker_id = worker_id
        self.connection: Any = None
        self.cancel_reason: str | None = None
        self._async_event: asyncio.Event | None = None
        self._thread_event: threading.Event | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self.run_task: asyncio.Task[None] | None = None
        """The worker's task running this job (the worker cancels it; not for handlers)."""
        self.deadline = 0.0
        """loop.time() after which the worker's watchdog stops the job (0: none; not for handlers)."""

    @property
    def app(self) -> Any:
        """The `Conveyor` app whose runtime runs this job (None for a bare context), to enqueue follow-up jobs
        from a handler. Typed loosely because the core sits below the public facade and does not import it."""
        return self.runtime.app if self.runtime is not None else None

    # ---- what the handler reads ----------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def payload(self) -> JSON:
        return self.job.payload

    @property
    def try_number(self) -> int:
        """Monotonic number of this try (never reset by requeue): the lease's fencing token."""
        return self.job.try_number

    @property
    def attempt(self) -> int:
        """This try's number towards `max_attempts` (1 on the first run; reset by requeue)."""
        return self.job.attempts

    @property
    def is_last_attempt(self) -> bool:
        return self.job.attempts >= self.job.max_attempts

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job id, task and try number (`extra`)."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                _task_logger,
                {"job_id": self.job.id, "task": self.job.task, "try_number": self.job.try_number},
            )
        return self._logger

    # ---- cancellation --------------------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the job should stop (safe to read from any thread)."""
        return self.cancel_reason is not None

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled when the job should stop: a one-line check for loops in sync handlers."""
        if self.cancel_reason is not None:
            raise JobCancelled(f"job {self.job.id} stopped: {self.cancel_reason}")

    @property
    def cancel_event(self) -> asyncio.Event:
        """An asyncio.Event set when the job should stop. Use from async handlers (on the worker's loop)."""
        if self._async_event is None:
            self._async_event = asyncio.Event()
            if self.cancel_reason is not None:
                self._async_event.set()
        return self._async_event

    async def wait_cancelled(self) -> str:
        """Async: wait until the job should stop; returns the reason."""
        await self.cancel_event.wait()
        return self.cancel_reason or "cancelled"

    def wait_cancelled_sync(self, timeout: float | None = None) -> bool:
        """Sync (threads): wait up to `timeout` seconds for the stop signal; True when it came.

        Handy as an interruptible sleep: `if ctx.wait_cancelled_sync(5): return`."""
        event = self._thread_event
        if event is None:
            # Publish the event before re-reading the flag: `request_cancel` writes the flag before reading the
            # event, so whichever runs second sees the other's write and the event is never left unset.
            event = self._thread_event = threading.Event()
            if self.cancel_reason is not None:
                event.set()
        return event.wait(timeout)

    def request_cancel(self, reason: str) -> bool:
        """Set the stop signal (worker side, on the worker's loop; not for handlers). False if it was set."""
        if self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        thread_event = self._thread_event
        if thread_event is not None:
            thread_event.set()
        async_event = self._async_event
        if async_event is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                async_event.set()
        return True

    def __repr__(self) -> str:
        return f"JobContext(job={self.job.id!r}, task={self.job.task!r}, try_number={self.job.try_number})"
