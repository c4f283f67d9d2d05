"""What the worker's parts share: its settings (read live, so a change made before or while it runs is seen, as
it was when the worker was one class) and the run state — the loop, the fetch loop's wake-up, and the flags of a
shutdown. Each part keeps its own data (producer: the prefetch buffer; executor: the slots; completer: the
unreported outcomes) and the others go through its public methods."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from conveyor.runtime import Runtime
    from conveyor.store.base import Store
    from conveyor.tasks import TaskSpec


class WorkerSettings(Protocol):
    """The worker's configuration, as its parts read it (`Worker` provides it)."""

    runtime: Runtime
    store: Store
    worker_id: str
    queues: list[str]
    namespaces: list[str] | None
    tasks: tuple[str, ...]
    specs: dict[str, TaskSpec]
    concurrency: int
    batch_size: int
    prefetch: int
    buffer_wait: float
    poll_interval: float
    lease: timedelta
    isolation: str
    grace_period: float
    heartbeat_interval: float
    registration_ttl: float


class RunState:
    """The state of one run of the worker, shared by its parts."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the worker runs on (set when it starts)."""
        self.wake: asyncio.Event | None = None
        """Set to make the fetch loop claim again."""
        self.stop_event: asyncio.Event | None = None
        self.stopping = False
        """No new claims: a shutdown has begun."""
        self.closed = False
        """The run is over: nothing is scheduled on the loop any more."""
        self.force = False
        """Stop running jobs without waiting for the grace period."""
        self.stop_requested = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wake = asyncio.Event()
        self.stop_event = asyncio.Event()

    def wake_up(self) -> None:
        if self.wake is not None:
            self.wake.set()

    async def sleep_or_stop(self, seconds: float) -> None:
        """Sleep `seconds`, or until the shutdown begins."""
        assert self.stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
