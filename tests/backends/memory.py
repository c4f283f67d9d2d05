"""The in-memory store: each URL names its own registry entry so that two opens of one URL share data."""

from __future__ import annotations

import uuid
from pathlib import Path


def fresh_url(tmp_path: Path) -> str:
    return f"memory://{uuid.uuid4().hex}"


async def cleanup(url: str) -> None:
    from conveyor.store.memory import MemoryStore

    MemoryStore.forget(url)
