"""The Redis store on the machine's shared Redis (127.0.0.1:6379, db 0): each test gets its own key prefix."""

from __future__ import annotations

import uuid
from pathlib import Path

REDIS = "redis://127.0.0.1:6379/0"


def fresh_url(tmp_path: Path) -> str:
    return f"{REDIS}?prefix=cvt:{uuid.uuid4().hex[:16]}"


async def cleanup(url: str) -> None:
    """Delete every key under the URL's prefix (and nothing else: other suites share this Redis)."""
    import redis.asyncio as aioredis

    from conveyor.store.redis.store import split_url

    base, prefix = split_url(url)
    client = aioredis.Redis.from_url(base)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
