"""LISTEN: one dedicated connection per store that wakes this process's idle workers on every NOTIFY (sent by the
jobs table's statement trigger when an enqueue commits). It reconnects by itself; polling (the worker's
`wait_for_jobs` timeout) stays the fallback while it is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from conveyor.store.wake import LocalWaker

__all__ = ["Listener"]

logger = logging.getLogger("conveyor.store.postgres")


class Listener:
    """Keeps one connection LISTENing on `channel` while started; `listening` is set while it is up."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: Callable[[], dict[str, Any]],
        channel: str,
        ping: str,
        waker: LocalWaker,
        name: str,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._channel = channel
        self._ping = ping
        self.waker = waker
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Set while the LISTEN connection is up (tests and health checks can wait for it).
        self.listening = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._listen(), name=self._name)

    async def stop(self) -> None:
        self._closed = True
        self.listening.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _listen(self) -> None:
        """Keep one connection LISTENing; wake local waiters on every notification. Reconnects by itself."""
        delay = 0.1
        down = False
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs())
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    if down:
                        logger.warning("LISTEN connection to PostgreSQL restored")
                        self.waker.notify()  # jobs may have arrived while nobody listened
                    down = False
                    delay = 0.1
                    while not self._closed:
                        async for _ in conn.notifies(timeout=15.0):
                            self.waker.notify()
                        await conn.execute(self._ping)  # type: ignore[arg-type]  # a quiet spell: is the link alive?
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                if self._closed:
                    return
                if not down:
                    logger.warning("LISTEN connection to PostgreSQL lost (%s); reconnecting, polling meanwhile", exc)
                down = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
