"""The in-memory store: each URL names its own registry entry so that two opens of one URL share data."""

from __future__ import annotations

from pathlib import Path

from tests.backends import isolated

BASE = "memory://"


def fresh_url(tmp_path: Path) -> str:
    return isolated(BASE, tmp_path)


async def cleanup(url: str) -> None:
    from conveyor.store import open_store

    await open_store(url).drop()


async def make_schema_newer(url: str) -> bool:
    """The memory store has no schema to be newer than this code."""
    return False


async def snapshot(url: str) -> object:
    """Everything the store named by `url` holds now (see `restore`)."""
    import copy

    from conveyor.store.memory import MemoryStore

    data = MemoryStore._registry[MemoryStore._name(url) or ""]
    with data.lock:
        return {name: copy.deepcopy(getattr(data, name)) for name in _STATE}


async def restore(url: str, snap: object) -> None:
    """Put the store back exactly as `snapshot` saw it: what a crash that lost every later write leaves behind."""
    import copy

    from conveyor.store.memory import MemoryStore

    data = MemoryStore._registry[MemoryStore._name(url) or ""]
    assert isinstance(snap, dict)
    with data.lock:
        for name in _STATE:
            setattr(data, name, copy.deepcopy(snap[name]))


_STATE = (
    "jobs",
    "attempts",
    "pending",
    "processing",
    "lane_pending",
    "lane_processing",
    "unique",
    "counts",
    "namespaces",
    "queue_settings",
    "workers",
    "kv",
)
