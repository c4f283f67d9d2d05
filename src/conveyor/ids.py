"""UUIDv7 job ids: time-ordered, so ids sort by creation and the primary-key index stays append-only.

Python 3.11 has no `uuid.uuid7`; this is RFC 9562's layout with the 12-bit `rand_a` field used as a counter so
that ids made within the same millisecond by one process still sort in creation order (method 1 of §6.2).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave headroom for the counter
        else:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one millisecond: borrow the next millisecond
                _last_ms += 1
                ms = _last_ms
                _counter = 0
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


_pool = b""
_pool_pos = 0


def _random_bits_62() -> int:
    """62 random bits from a pooled os.urandom buffer (one syscall per 512 ids instead of one per id)."""
    global _pool, _pool_pos
    if _pool_pos + 8 > len(_pool):
        _pool, _pool_pos = os.urandom(4096), 0
    start = _pool_pos
    _pool_pos = start + 8
    return int.from_bytes(_pool[start : start + 8], "big") & ((1 << 62) - 1)


def new_job_id() -> str:
    """A UUIDv7 as its canonical string, built without a uuid.UUID object (the enqueue hot path)."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        else:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                ms = _last_ms
                _counter = 0
        counter = _counter
        rand_b = _random_bits_62()
    h = f"{(ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_job_ids(count: int) -> list[str]:
    """`count` UUIDv7 strings at once (batch enqueue): one lock, one clock reading and one random read for the
    whole batch. Same layout and ordering guarantees as new_job_id; they sort after any id made before."""
    global _last_ms, _counter
    if count <= 0:
        return []
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = (int.from_bytes(os.urandom(2), "big") & 0x3FF) - 1
        counters: list[tuple[int, int]] = []
        for _ in range(count):
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one millisecond: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            counters.append((_last_ms, _counter))
    randomness = os.urandom(8 * count).hex()
    ids: list[str] = []
    prefix_ms = -1
    prefix = ""
    for index, (stamp, counter) in enumerate(counters):
        if stamp != prefix_ms:
            prefix_ms = stamp
            hex_ms = f"{stamp & ((1 << 48) - 1):012x}"
            prefix = f"{hex_ms[:8]}-{hex_ms[8:]}-7"
        rand = randomness[16 * index : 16 * index + 16]
        variant = "89ab"[int(rand[0], 16) & 3]  # RFC 9562 variant bits 10xx
        ids.append(f"{prefix}{counter:03x}-{variant}{rand[1:4]}-{rand[4:]}")
    return ids
