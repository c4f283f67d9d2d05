"""Signals in both senses: `Signal`, the worker's started/stopped flags that any loop or thread can wait on, and
the installation of SIGTERM/SIGINT handlers on the worker's loop (only from the main thread, where Python allows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable


class Signal:
    """A set-once-style event usable from every loop and thread: `await sig.wait()` (any loop), `sig.wait_sync()`
    (threads), `sig.is_set()`. The worker's loop is not the caller's loop when the worker runs on an app's home
    loop, so a plain asyncio.Event would not do."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        with self._lock:
            self._flag.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._flag.is_set():
                return True
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))
        return True

    def wait_sync(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]) -> list[int]:
    """Route SIGTERM and SIGINT to `handler(signum)` on `loop`; the signals installed (none off the main thread,
    where the OS handlers belong to whoever runs the process)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    installed: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler, int(sig))
            installed.append(int(sig))
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return installed


def remove_signal_handlers(loop: asyncio.AbstractEventLoop, signals: list[int]) -> None:
    for sig in signals:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
