"""Running the store's Lua scripts (and its wake-up BLPOP): redis-py connections in a free list of the store's own.

Why not the redis-py client and its pool, as for every other command: a job's path from enqueue to start is two
script calls, and on this code path the pooled client costs more than Redis does. Each command acquires the pool's
lock, probes the socket with a zero timeout, and (Python 3.11) sends through `asyncio.wait_for`, a new task per
command. After a few milliseconds of idleness every one of those event-loop turns is slow, so a single script call
took about 0.4 ms where the same EVALSHA on a bare connection takes about 0.14 ms. Here a call pops a connected
redis-py `Connection` (its packing, parsing, SSL and auth are kept), sends, reads, and pushes it back; one
`asyncio.timeout` bounds the whole call.

A connection whose state is unknown (timeout, cancellation mid-reply, connection error) is closed, never reused.
A reused connection that fails with a connection error before answering is retried once on a fresh connection:
that is the stale socket left by a Redis restart, as redis-py's own one retry handled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

MAX_IDLE = 16  # connections kept open in the free list; more are closed when returned


class ScriptRunner:
    def __init__(
        self,
        url: str,
        scripts: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int | None = None,
        **options: Any,
    ) -> None:
        # The pool is only a connection factory (URL parsing, auth, SSL, database); its get_connection is never used.
        self._factory = aioredis.ConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,
            health_check_interval=10,
            **options,
        )
        self._sources = dict(scripts)
        self._shas = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in scripts.items()}
        self._timeout = timeout
        self._free: list[aioredis.Connection] = []
        self._closed = False
        self._closing: set[asyncio.Future[None]] = set()
        # Unbounded by default, like redis-py's pool; with a bound, callers beyond it wait for a connection.
        self._slots = None if max_connections is None else asyncio.Semaphore(max(1, max_connections))

    async def run(self, name: str, args: Sequence[Any]) -> Any:
        """EVALSHA the script `name` with no keys and `args` (loading it first when Redis does not know it)."""
        return await self._call(lambda conn: self._evalsha(conn, name, args), self._timeout)

    async def command(self, *args: Any, timeout: float) -> Any:
        """Any other command on the same connections, bounded by `timeout` seconds (BLPOP: its block time plus the
        socket timeout)."""

        async def send(conn: aioredis.Connection) -> Any:
            await conn.send_command(*args)
            return await conn.read_response()

        return await self._call(send, timeout)

    async def _call(self, body: Callable[[aioredis.Connection], Awaitable[Any]], timeout: float) -> Any:
        async with self._slots or contextlib.nullcontext():
            return await self._attempts(body, timeout)

    async def _attempts(self, body: Callable[[aioredis.Connection], Awaitable[Any]], timeout: float) -> Any:
        for attempt in (1, 2):
            reused = bool(self._free)
            conn = self._free.pop() if reused else self._connect()
            try:
                async with asyncio.timeout(timeout):
                    reply = await body(conn)
            except rexc.ResponseError:
                self._put(conn)  # the script's error; the connection itself is fine
                raise
            except (rexc.ConnectionError, ConnectionError):
                await _close(conn)
                if attempt == 1 and reused:
                    continue
                raise
            except BaseException:
                await _close(conn)
                raise
            self._put(conn)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> aioredis.Connection:
        make: Callable[[], aioredis.Connection] = self._factory.make_connection  # connects on first send
        return make()

    async def _evalsha(self, conn: aioredis.Connection, name: str, args: Sequence[Any]) -> Any:
        try:
            await conn.send_command("EVALSHA", self._shas[name], 0, *args)
            return await conn.read_response()
        except rexc.NoScriptError:  # Redis restarted without persistence, or SCRIPT FLUSH
            await conn.send_command("SCRIPT", "LOAD", self._sources[name])
            self._shas[name] = await conn.read_response()
            await conn.send_command("EVALSHA", self._shas[name], 0, *args)
            return await conn.read_response()

    def _put(self, conn: aioredis.Connection) -> None:
        if self._closed or len(self._free) >= MAX_IDLE:
            task = asyncio.ensure_future(_close(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            return
        self._free.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        free, self._free = self._free, []
        for conn in free:
            await _close(conn)


async def _close(conn: aioredis.Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


SCRIPTS = (
    "enqueue",
    "claim",
    "claim_user",
    "heartbeat",
    "finish",
    "rescue",
    "next_lease_expiry",
    "cancel",
    "requeue",
    "delete",
    "delete_user",
    "run_now",
    "prune",
    "stats",
    "list",
    "restore",
    "next_due",
    "mark_timed_out",
    "elect",
    "put_namespace",
    "delete_namespace",
    "migrate",
    "kv_setdefault",
    "queue_settings",
    "schedules",
    "rate_state",
)
"""Every transition script (lua/<name>.lua), loaded by each ScriptRunner."""


def load_script(name: str) -> str:
    """A script's text: lua/common.lua followed by lua/<name>.lua (one EVALSHA per transition)."""
    lua = resources.files("conveyor.store.redis").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()
