"""Redis store (redis-py asyncio). Every job state change is one Lua script in lua/; the key layout is in keys.py."""

from conveyor.store.redis.store import UNAVAILABLE, RedisStore

__all__ = ["UNAVAILABLE", "RedisStore"]
