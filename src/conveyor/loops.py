"""Which event loop Conveyor's own long-running entry points use (the CLI's commands, the benchmark).

uvloop is installed with uvicorn[standard] and makes the worker's loop noticeably cheaper per job, so `conveyor
worker`, `conveyor bench` (and every other command, for one behaviour) run on it when it is importable — the same
choice uvicorn makes for `conveyor serve`. `CONVEYOR_LOOP=asyncio` forces the standard loop (the benchmark reports
which loop it ran on).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when wanted and available, else None (the standard loop)."""
    choice = os.environ.get("CONVEYOR_LOOP", "auto").strip().lower()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(body: Callable[[], Awaitable[T]]) -> T:
    """`asyncio.run` on the chosen loop."""

    async def main() -> T:
        return await body()

    factory = loop_factory()
    if factory is None:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=factory) as runner:
        result: Any = runner.run(main())
        return result  # type: ignore[no-any-return]
