"""Events across processes: this runtime's push/run/cancel events go out through the store, and other processes'
come back onto this runtime's event bus, so an API node's SSE (and WebSocket) clients hear jobs that were enqueued
or run anywhere.

**Out.** A bus listener queues every event of this process (`Event.origin is None`) and one task on the home loop
sends what has gathered in batches (`Store.publish_events`; messages of at most EVENT_MESSAGE_MAX_BYTES, each
naming this relay's `origin`). It is sent after the store call that made the event has returned, so a receiver
that reads the job finds it. An enqueue on the caller's connection publishes through that connection
(`Store.publish_events_on_connection`), inside the caller's transaction: its events go out at its commit, never on
a rollback, and come back to this process as well (it published nothing locally).

**In.** `listen()` (the HTTP server calls it at start-up, before it accepts a connection) subscribes to the store
and returns once subscribed; every message from another origin is decoded into typed events (`Event.origin` set)
and published on the bus. A process drops its own messages (its bus had them already), so every subscriber of
the bus gets each event once.

**Only when someone listens.** Encoding and sending every event of every job costs the hot paths (a NOTIFY or a
row per batch, ~20 µs of CPU per job): a process sends nothing while no process listens. A listener keeps the
store key LISTENERS_KEY alive (TTL LISTENERS_TTL, refreshed every LISTENERS_REFRESH); a sender reads it at most
every AUDIENCE_CHECK seconds while it has events to send (PRESENT_FOR once it found a listener), and drops the
batch unencoded when nobody listens. So a process that starts listening may miss up to AUDIENCE_CHECK seconds of
other processes' events — the HTTP server listens before it reports healthy, so its clients never see that gap.

**Guarantees.** At most once, per bus subscription: an event is lost when the store is unreachable while it is
sent (it is not retried), when the subscribing connection is down (it reconnects by itself), or when the process
ends before its batch went out (`aclose` sends what is queued). Order is kept per publishing process, not across
processes (a run event can overtake the push event of its job when they come from two processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from conveyor.errors import Unsupported
from conveyor.events import Event, EventBus
from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus
from conveyor.store import Store
from conveyor.store.feed import EventFeed, split_messages

__all__ = ["EXPORTED_TYPES", "EventRelay", "decode_message", "encode_events"]

log = logging.getLogger("conveyor.relay")

T = TypeVar("T")

EXPORTED_TYPES = frozenset({"push", "run", "cancel"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_WARN_EVERY = 30.0
LISTENERS_KEY = "conveyor:events:listeners"
"""A store key that exists while some process listens to other processes' events (any value; it expires)."""
LISTENERS_TTL = 15.0
LISTENERS_REFRESH = 5.0
AUDIENCE_CHECK = 0.5
"""Seconds a sender trusts "nobody listens" before it asks the store again."""
PRESENT_FOR = 5.0
"""Seconds a sender trusts "someone listens" (a listener's key lives LISTENERS_TTL, refreshed every
LISTENERS_REFRESH)."""


class RelayHost(Protocol):
    """What the relay needs of its runtime (conveyor.runtime.Runtime)."""

    store: Store
    events: EventBus

    @property
    def home(self) -> asyncio.AbstractEventLoop | None: ...

    async def on_home(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T: ...


def _us(value: datetime) -> int:
    return (value - _EPOCH) // _US


def _dt(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else _us(value)


def _encode(event: Event) -> str:
    job = event.job
    item: dict[str, Any] = {
        "t": event.type,
        "j": job.id,
        "n": job.namespace,
        "q": job.queue,
        "k": job.task,
        "u": job.user_id,
        "s": job.status.value,
        "r": _us(job.run_at),
        "y": job.try_number,
        "b": _opt_us(job.started_at),
        "a": _us(event.at),
    }
    if event.type == "cancel" and job.lease_token:
        item["l"] = job.lease_token
    attempt = event.attempt
    if attempt is not None:
        item["c"] = attempt.status_code
        item["m"] = attempt.outcome.value
        item["as"] = _us(attempt.started_at)
        item["af"] = _us(attempt.finished_at)
        item["ay"] = attempt.try_number
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def encode_events(events: Sequence[Event], origin: str, *, echo: bool = False) -> list[str]:
    """Messages carrying `events` for Store.publish_events: ids and small fields only (no payload, result or error),
    at most EVENT_MESSAGE_MAX_BYTES each. `echo`: the publishing process delivers them too when they come back."""
    opening = '{"o":' + json.dumps(origin) + ',"x":' + ("1" if echo else "0") + ',"e":['
    return split_messages([_encode(e) for e in events], opening=opening, closing="]}")


def decode_message(message: str) -> tuple[str, bool, list[Event]]:
    """(origin, echo, events) of one message; ValueError (or KeyError/TypeError) for a malformed one."""
    data = json.loads(message)
    origin = str(data["o"])
    events: list[Event] = []
    for item in data["e"]:
        at = _dt(int(item["a"]))
        try_number = int(item["y"])
        started = item.get("b")
        job = Job(
            id=str(item["j"]),
            namespace=str(item["n"]),
            queue=str(item["q"]),
            task=str(item["k"]),
            payload=None,
            status=JobStatus(item["s"]),
            priority=0,
            run_at=_dt(int(item["r"])),
            attempts=try_number,
            max_attempts=0,
            try_number=try_number,
            created=at,
            updated=at,
            user_id=None if item.get("u") is None else str(item["u"]),
            started_at=None if started is None else _dt(int(started)),
            lease_token=item.get("l"),
        )
        attempt = None
        if "c" in item:
            attempt = Attempt(
                job_id=job.id,
                try_number=int(item.get("ay", try_number)),
                outcome=AttemptOutcome(item["m"]),
                status_code=int(item["c"]),
                started_at=_dt(int(item["as"])),
                finished_at=_dt(int(item["af"])),
            )
        events.append(Event(str(item["t"]), job, attempt, at=at, origin=origin))
    return origin, bool(data.get("x")), events


class EventRelay:
    """One per runtime (`runtime.relay`): sends this process's events through the store, and (while `listen()`ed)
    puts other processes' events on the bus. See the module docstring."""

    def __init__(self, host: RelayHost) -> None:
        self.host = host
        self.origin = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._pending: deque[Event] = deque()
        self._scheduled = False
        self._flushing: asyncio.Task[None] | None = None
        self._unsupported = False
        self._warned_at = -_WARN_EVERY
        self._users = 0
        self._listen_lock: asyncio.Lock | None = None
        self._feed: EventFeed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._presence: asyncio.Task[None] | None = None
        self._audience: bool = False
        self._audience_until = 0.0  # monotonic time until which `_audience` is trusted
        host.events.add_listener(self._on_event)

    # ---- out -----------------------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """Bus listener (the publisher's thread): queue the event; one hop to the home loop per batch."""
        if event.origin is not None or event.type not in EXPORTED_TYPES or self._unsupported:
            return
        home = self.host.home
        if home is None or home.is_closed():
            return
        with self._lock:
            self._pending.append(event)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is home:
                home.call_soon(self._start_flush)
            else:
                home.call_soon_threadsafe(self._start_flush)
        except RuntimeError:  # the home loop closed meanwhile: nobody can send them
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _start_flush(self) -> None:
        self._flushing = asyncio.ensure_future(self._flush())

    def _take(self) -> list[Event]:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            if not batch:
                self._scheduled = False
            return batch

    async def _someone_listens(self) -> bool:
        """Whether any process listens (this one included), from the store at most every AUDIENCE_CHECK seconds."""
        now = time.monotonic()
        if now < self._audience_until:
            return self._audience
        try:
            present = self._feed is not None or await self.host.store.kv_get(LISTENERS_KEY) is not None
        except Exception:  # the store is down: the send would fail too; try again soon
            present = False
        self._audience = present
        self._audience_until = now + (PRESENT_FOR if present else AUDIENCE_CHECK)
        return present

    async def _flush(self) -> None:
        while batch := self._take():
            if not await self._someone_listens():
                continue  # nobody anywhere would receive them: not even encoded
            messages = encode_events(batch, self.origin)
            try:
                await self.host.on_home(functools.partial(self.host.store.publish_events, messages))
            except Unsupported:
                self._unsupported = True  # a store without the transport: stop queueing
            except Exception as exc:  # lost: at most once (module docstring)
                self._warn(f"{len(batch)} event(s) not sent to other processes: {exc}")

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("%s", text)

    async def drain(self) -> None:
        """Send what is queued now (on the home loop; `aclose` and the runtime's close call it)."""
        task = self._flushing
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        await self._flush_now()

    async def _flush_now(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch or not await self._someone_listens():
            return
        store = self.host.store
        try:
            await store.publish_events(encode_events(batch, self.origin))
        except Exception as exc:
            if not isinstance(exc, Unsupported):
                self._warn(f"{len(batch)} event(s) not sent to other processes: {exc}")

    def published_on_connection(self, jobs: Sequence[Job]) -> list[str]:
        """The messages of push events for jobs enqueued on a caller's connection (echoed to this process too)."""
        return encode_events([Event("push", job) for job in jobs if not job.duplicate], self.origin, echo=True)

    # ---- in ------------------------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._feed is not None

    async def listen(self) -> bool:
        """Put other processes' events on this runtime's bus until `unlisten()` (counted: one call each). Returns
        once subscribed, True; False when the store carries no events between processes. Call on the home loop
        (or anywhere: it is carried there). StoreUnavailable when the store cannot be reached now."""
        return await self.host.on_home(self._listen)

    async def _listen(self) -> bool:
        if self._listen_lock is None:
            self._listen_lock = asyncio.Lock()
        async with self._listen_lock:
            if self._feed is not None:
                self._users += 1
                return True
            try:
                feed = await self.host.store.subscribe_events()
            except Unsupported:
                return False
            self._feed = feed
            self._users = 1
            self._reader = asyncio.create_task(self._read(feed), name="conveyor-relay")
            await self._announce()  # before returning: senders that look now find a listener
            self._presence = asyncio.create_task(self._keep_announcing(), name="conveyor-relay-presence")
            return True

    async def _announce(self) -> None:
        with contextlib.suppress(Exception):  # the store is down: the feed reconnects, the next refresh retries
            await self.host.store.kv_set(LISTENERS_KEY, self.origin, ttl=LISTENERS_TTL)
        self._audience, self._audience_until = True, time.monotonic() + PRESENT_FOR

    async def _keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(LISTENERS_REFRESH)
            await self._announce()

    async def unlisten(self) -> None:
        """One `listen()` less; the last one closes the subscription."""
        await self.host.on_home(self._unlisten)

    async def _unlisten(self, force: bool = False) -> None:
        if self._feed is None:
            return
        self._users = 0 if force else self._users - 1
        if self._users > 0:
            return
        feed, self._feed = self._feed, None
        reader, self._reader = self._reader, None
        presence, self._presence = self._presence, None
        if presence is not None:
            presence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await presence
        await feed.aclose()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, feed: EventFeed) -> None:
        bus = self.host.events
        async for messages in feed:
            for message in messages:
                try:
                    origin, echo, events = decode_message(message)
                except (ValueError, KeyError, TypeError) as exc:
                    self._warn(f"an event message from the store could not be read ({exc}); skipped")
                    continue
                if origin == self.origin and not echo:
                    continue  # this process's own: its bus had it already
                for event in events:
                    bus.publish(event)

    async def aclose(self) -> None:
        """Send what is queued and stop listening (the runtime's close; on the home loop)."""
        await self.drain()
        await self._unlisten(force=True)
