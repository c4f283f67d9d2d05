"""In-process wake-ups shared by every store: an enqueue wakes idle workers of the same process at once.

Waiters may live on different event loops (the sync API's private loop, a worker's loop), so notification goes
through `call_soon_threadsafe` to each waiter's own loop.
"""

from __future__ import annotations

import asyncio
import threading


class LocalWaker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def notify(self) -> None:
        """Wake every current waiter. Safe from any thread and any loop."""
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed; its waiter is gone with it
                pass

    async def wait(self, timeout: float) -> bool:
        """Wait for a notify or the timeout. True when woken."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
