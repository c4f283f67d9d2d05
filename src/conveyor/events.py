"""In-process event bus: GS2's push/run notifications, job lifecycle events, and cancel signals.

Subscribers (the SSE endpoint, the webhook dispatcher, a local worker watching for cancels, metrics) each get an
unbounded-by-default asyncio queue on their own loop; publishing never blocks the publisher. A slow subscriber
whose queue fills (`maxsize`) drops its oldest events rather than stall the worker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.model import Attempt, Job, utcnow


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a job: `type` is push (queued), run (a try ended: `attempt` says how) or cancel
    (cancel requested). Typed all the way: the `Job` snapshot, the `Attempt` of a run, and the durations derived
    from them; the wire shapes (SSE, webhook bodies, GS2 notifications) are made at each edge by one function
    (`conveyor.server.notify.sse_data`, `conveyor.webhooks.webhook_body`,
    `conveyor.server.gs2_gateway.job_queue_notification`), never here.

    `origin` is None for an event of this process, else the id of the process that published it through the store
    (`conveyor.relay`): such an event's `job` holds only the fields the transport carries (id, namespace, queue,
    task, user, run_at, try number, started_at, status; payload None). Metrics and the webhook dispatcher count
    their own process's events only, so a cluster counts and delivers each event once."""

    type: str
    job: Job
    attempt: Attempt | None = None
    at: datetime = field(default_factory=utcnow)
    origin: str | None = None

    @property
    def namespace(self) -> str:
        return self.job.namespace

    @property
    def user_id(self) -> str | None:
        return self.job.user_id

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def lease_token(self) -> str | None:
        """Of a cancel event: the claim the cancel was meant for (a local worker stops the job only if it still
        holds that claim). Never part of a wire body."""
        return self.job.lease_token

    @property
    def started_at(self) -> datetime | None:
        """When the run of a `run` event started."""
        if self.attempt is not None:
            return self.attempt.started_at
        return self.job.started_at

    @property
    def run_time(self) -> float | None:
        """Seconds from the start of the run to its end (`run` events)."""
        if self.attempt is None:
            return None
        return max(self.attempt.duration, 0.0)

    @property
    def queue_wait(self) -> float | None:
        """Seconds from when the job was due (enqueue or run_at) to the start of the run (`run` events)."""
        started = self.started_at
        if self.type != "run" or started is None:
            return None
        return max((started - self.job.run_at).total_seconds(), 0.0)

    @property
    def remote(self) -> bool:
        return self.origin is not None


class Subscription:
    def __init__(self, bus: EventBus, predicate: Callable[[Event], bool] | None, maxsize: int) -> None:
        self._bus = bus
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self._predicate = predicate

    def offer(self, event: Event) -> None:
        """Hand `event` to this subscription from any thread (the bus calls it); it lands on the subscriber's loop."""
        if self._predicate is not None and not self._predicate(event):
            return
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:
            self._bus.unsubscribe(self)

    def _put(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while True:
                yield await self._queue.get()
        finally:
            self.close()


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._listeners: list[Callable[[Event], Any]] = []

    def subscribe(self, predicate: Callable[[Event], bool] | None = None, *, maxsize: int = 10_000) -> Subscription:
        """Call from the loop that will consume the events."""
        sub = Subscription(self, predicate, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def add_listener(self, fn: Callable[[Event], Any]) -> None:
        """A synchronous callback run in the publisher's thread (must be quick and never raise)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Event], Any]) -> None:
        """Undo add_listener (a stopped worker removes its cancel listener)."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def is_observed(self, ignore: Callable[[Event], Any] | None = None) -> bool:
        """Whether any subscription or listener (other than `ignore`) would receive an event, so that hot paths
        (the worker's per-job `run` events) can skip building events nobody reads."""
        with self._lock:
            return bool(self._subs) or any(fn != ignore for fn in self._listeners)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # a broken listener must never break enqueue or the worker
                pass
        for sub in subs:
            sub.offer(event)

    # the standard events

    def publish_push(self, job: Job) -> None:
        self.publish(Event("push", job))

    def publish_run(self, job: Job, attempt: Attempt) -> None:
        self.publish(Event("run", job, attempt))

    def publish_cancel(self, job: Job) -> None:
        self.publish(Event("cancel", job))
