"""Constants every part of the model shares (defaults, limits, the name pattern) and `utcnow`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

JSON = Any
"""A value that survives `json.dumps` (dict, list, str, int, float, bool, None)."""

DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_RANGE = (1, 100)
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB, PocketBase's JobMaxPayloadSize
MAX_NAME = 128
DEFAULT_LEASE = timedelta(seconds=30)
DEFAULT_TIMEOUT = 300.0  # seconds, per task
RETRYABLE_STATUS_CODES = frozenset({402, 409, 500, 502, 503, 504})  # GS2 SDK's RecommendRetry table

NAME_RE = re.compile(r"[A-Za-z0-9\-_.]{1,128}")
NAME_PATTERN = r"^[A-Za-z0-9\-_.]{1,128}$"
"""Namespace and queue names, as the OpenAPI document states them."""
BAD_TEXT_RE = re.compile("[\x00\ud800-\udfff]")


def utcnow() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEDULE_RUNS_KEPT = 200
"""Run records kept per schedule (the newest by occurrence); older ones are trimmed as new ones are recorded."""
