"""The Redis store on the machine's shared Redis (127.0.0.1:6379, db 0): each test gets its own key prefix."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.store import open_store
from tests.backends import isolated

REDIS = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASE = REDIS


def fresh_url(tmp_path: Path) -> str:
    return isolated(BASE, tmp_path)


async def cleanup(url: str) -> None:
    """Delete every key under the URL's prefix (and nothing else: other suites share this Redis)."""
    await open_store(url).drop()


async def make_schema_newer(url: str) -> bool:
    """Record a key layout newer than this code knows, as a newer Conveyor would have."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.store import split_url

    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        await client.hset(f"{prefix}:meta", "schema", "99")
    finally:
        await client.aclose()
    return True


async def snapshot(url: str) -> object:
    """Every key under the URL's prefix, DUMPed with its time to live (see `restore`)."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.store import split_url

    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        saved: list[tuple[bytes, bytes, int]] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            dumped = await client.dump(key)
            if dumped is not None:
                saved.append((key, dumped, max(0, await client.pttl(key))))
        return saved
    finally:
        await client.aclose()


async def restore(url: str, snap: object) -> None:
    """Replace every key under the prefix with the snapshot's, in one MULTI/EXEC: what a restart that lost every
    later write (appendfsync everysec, a kill -9) leaves behind."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.store import split_url

    assert isinstance(snap, list)
    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        pipe = client.pipeline(transaction=True)
        if keys:
            pipe.delete(*keys)
        for key, dumped, ttl in snap:
            pipe.restore(key, ttl, dumped, replace=True)
        await pipe.execute()
    finally:
        await client.aclose()
