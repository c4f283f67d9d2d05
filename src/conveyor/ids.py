"""UUIDv7 job ids: time-ordered, so ids sort by creation and the primary-key index stays append-only.

Python 3.11 has no `uuid.uuid7`; this is RFC 9562's layout with the 12-bit `rand_a` field used as a counter so
that ids made within the same millisecond by one process still sort in creation order (method 1 of §6.2).
Ids are built straight as strings (the enqueue hot path), with randomness taken from a pooled os.urandom buffer.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_pool = ""  # hex digits of os.urandom output, consumed 16 per id
_pool_pos = 0


def _stamps(count: int) -> tuple[list[tuple[int, int]], str]:
    """(millisecond, counter) for `count` new ids, strictly increasing, and 16 random hex digits per id."""
    global _last_ms, _counter, _pool, _pool_pos
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = (int.from_bytes(os.urandom(2), "big") & 0x3FF) - 1  # headroom for the counter
        stamps: list[tuple[int, int]] = []
        for _ in range(count):
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one millisecond: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            stamps.append((_last_ms, _counter))
        need = 16 * count
        if _pool_pos + need > len(_pool):
            _pool, _pool_pos = os.urandom(max(4096, 8 * count)).hex(), 0
        randomness = _pool[_pool_pos : _pool_pos + need]
        _pool_pos += need
    return stamps, randomness


def new_job_ids(count: int) -> list[str]:
    """`count` UUIDv7 strings at once (batch enqueue: one lock and one clock reading for the whole batch); they
    sort after every id made before them in this process."""
    if count <= 0:
        return []
    stamps, randomness = _stamps(count)
    ids: list[str] = []
    prefix_ms = -1
    prefix = ""
    for index, (stamp, counter) in enumerate(stamps):
        if stamp != prefix_ms:
            prefix_ms = stamp
            hex_ms = f"{stamp & ((1 << 48) - 1):012x}"
            prefix = f"{hex_ms[:8]}-{hex_ms[8:]}-7"
        rand = randomness[16 * index : 16 * index + 16]
        variant = "89ab"[int(rand[0], 16) & 3]  # RFC 9562 variant bits 10xx
        ids.append(f"{prefix}{counter:03x}-{variant}{rand[1:4]}-{rand[4:]}")
    return ids


def new_job_id() -> str:
    """One UUIDv7 as its canonical string."""
    return new_job_ids(1)[0]


def uuid7() -> uuid.UUID:
    return uuid.UUID(new_job_id())


def derived_job_id(at_ms: int, key: str) -> str:
    """A UUIDv7 whose time is `at_ms` and whose other bits come from hashing `key`: the same (time, key) always
    gives the same id. The cron scheduler names each occurrence's job this way, so the store's primary key refuses
    a second job for one occurrence, whichever process (or new leader) tries to enqueue it."""
    import hashlib

    digest = hashlib.sha256(key.encode()).hexdigest()
    hex_ms = f"{at_ms & ((1 << 48) - 1):012x}"
    variant = "89ab"[int(digest[3], 16) & 3]
    return f"{hex_ms[:8]}-{hex_ms[8:]}-7{digest[:3]}-{variant}{digest[4:7]}-{digest[7:19]}"
