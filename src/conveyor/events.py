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

from conveyor.model import JSON, Job, utcnow


@dataclass(frozen=True, slots=True)
class Event:
    """`type` is one of: push (a job was queued), run (a job was executed), cancel (cancel requested),
    completed, failed, retry. `data` is the JSON body sent to subscribers. `lease_token` (cancel events of a running
    job) names the claim the cancel was meant for; it stays inside the process, never in `data`."""

    type: str
    namespace: str
    user_id: str | None
    job_id: str | None
    data: dict[str, JSON] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    lease_token: str | None = None


class Subscription:
    def __init__(self, bus: EventBus, predicate: Callable[[Event], bool] | None, maxsize: int) -> None:
        self._bus = bus
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self._predicate = predicate

    def _offer(self, event: Event) -> None:
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
            sub._offer(event)

    # helpers for the standard events

    def publish_push(self, job: Job) -> None:
        self.publish(
            Event(
                "push",
                job.namespace,
                job.user_id,
                job.id,
                {
                    "namespaceName": job.namespace,
                    "userId": job.user_id,
                    "jobName": job.id,
                    "task": job.task,
                    "queue": job.queue,
                },
            )
        )

    def publish_run(self, job: Job, status_code: int, outcome: str) -> None:
        self.publish(
            Event(
                "run",
                job.namespace,
                job.user_id,
                job.id,
                {
                    "namespaceName": job.namespace,
                    "userId": job.user_id,
                    "jobName": job.id,
                    "task": job.task,
                    "statusCode": status_code,
                    "outcome": outcome,
                    # for metrics (run duration, enqueue-to-start latency) and webhook receivers
                    "queue": job.queue,
                    "tryNumber": job.try_number,
                    "startedAt": job.started_at.isoformat() if job.started_at else None,
                    "runAt": job.run_at.isoformat(),
                },
            )
        )

    def publish_cancel(self, job: Job) -> None:
        self.publish(
            Event("cancel", job.namespace, job.user_id, job.id, {"jobName": job.id}, lease_token=job.lease_token)
        )
