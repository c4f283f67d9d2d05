"""Values ↔ the strings the Lua scripts read and write: times as integer microseconds, jobs as hashes (decoder
generated from the model's field list, conveyor/codec.py), attempts and workers as JSON documents, batches as JSON
rows."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _encode_str  # type: ignore[attr-defined]
from typing import Any

from conveyor.codec import JOB_FIELDS, STORED_ATTEMPT_FIELDS, STORED_JOB_FIELDS, mapping_decoder
from conveyor.model import (
    LOST_STATUS_CODE,
    Attempt,
    AttemptOutcome,
    Job,
    JobStatus,
    QueueSettings,
    RateLimit,
    not_applied_error,
    rate_from_columns,
)

__all__ = [
    "EPOCH",
    "ONE_US",
    "STATUS",
    "STATUS_VALUES",
    "attempt_body",
    "attempt_head",
    "decode_attempt",
    "decode_job",
    "decode_queue_settings",
    "decode_rate",
    "dumps",
    "encode_attempt",
    "encode_rate",
    "encode_rows",
    "from_us",
    "is_one",
    "json_or_empty",
    "lost_head",
    "text_or_empty",
    "to_us",
    "us_or_empty",
]

log = logging.getLogger("conveyor.store.redis")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
STATUS_VALUES = [s.value for s in JobStatus]


def to_us(dt: datetime) -> int:
    """A datetime as integer microseconds since the epoch (exact, unlike float timestamps)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // ONE_US


# Below this (year 2191) a float of seconds is within half a microsecond of the truth, so fromtimestamp (twice as
# fast as datetime arithmetic) rounds back to the exact microsecond; beyond it, exact integer arithmetic.
_FAST_US_LIMIT = 7_000_000_000_000_000
_fromtimestamp = datetime.fromtimestamp


def from_us(value: str | int) -> datetime:
    us = int(value)
    if -_FAST_US_LIMIT < us < _FAST_US_LIMIT:
        return _fromtimestamp(us / 1_000_000, UTC)
    return EPOCH + timedelta(microseconds=us)


def text_or_empty(value: str | None) -> str:
    """Optional string argument for a script: '' is None, anything else carries a leading '='."""
    return "" if value is None else "=" + value


def encode_rows(rows: list[list[str | None]]) -> str:
    """A batch as one script argument: redis-py packs one large argument much faster than many small ones."""
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def us_or_empty(value: datetime | None) -> str:
    return "" if value is None else f"={to_us(value)}"


STATUS = {s.value: s for s in JobStatus}


def is_one(value: object) -> bool:
    """The scripts write a flag as "1" (and delete the field for false)."""
    return value == "1"


decode_job = mapping_decoder(
    Job,
    (*STORED_JOB_FIELDS, next(f for f in JOB_FIELDS if f.name == "payload_json")),
    {"status": STATUS, "int": int, "time": from_us, "json": json.loads, "bool": is_one},
    sources={"payload_json": "payload"},
    name="decode_job",
)
"""A Job from a job hash's fields (absent fields get their defaults), as HGETALL or a script's JSON gives them:
`decode_job(h, duplicate=False)`. The hash fields are named after conveyor.codec.JOB_FIELDS (plus `skey`, the
serial key the scripts keep); payload_json is the stored payload text."""


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def json_or_empty(text: str | None) -> str:
    """A JSON string (or null), by the json module's C escaper: several of these per finish are on the hot path."""
    return "null" if text is None else _encode_str(text)


def attempt_head(a: Attempt) -> str:
    """The first fields of a stored attempt record, outcome first: finish.lua recognises a LOST record by its first
    bytes, and stores `lost_head` instead when the report turns out stale."""
    return f'{{"outcome":"{a.outcome.value}","status_code":{a.status_code},"error":{json_or_empty(a.error)}'


def lost_head(a: Attempt) -> str:
    """`attempt_head` of `model.not_applied(a)`: the record a refused report is kept as."""
    return f'{{"outcome":"lost","status_code":{LOST_STATUS_CODE},"error":{json_or_empty(not_applied_error(a))}'


def attempt_body(a: Attempt) -> str:
    """The rest of a stored attempt record (after `attempt_head`), closing the JSON object."""
    result = "null" if a.result is None else dumps(a.result)
    return (
        f',"job_id":{json_or_empty(a.job_id)},"try_number":{a.try_number},"started_at":{to_us(a.started_at)},'
        f'"finished_at":{to_us(a.finished_at)},"worker_id":{json_or_empty(a.worker_id)},"result":{result},'
        f'"traceback":{json_or_empty(a.traceback)}}}'
    )


def encode_attempt(a: Attempt) -> str:
    return attempt_head(a) + attempt_body(a)


_attempt_from = mapping_decoder(
    Attempt,
    tuple(f for f in STORED_ATTEMPT_FIELDS if f.name != "lease_token"),  # the record's hash field, not in it
    {"outcome": AttemptOutcome, "int": int, "time": from_us},
    name="decode_attempt",
)


def decode_attempt(text: str, field: str | None = None) -> Attempt:
    """An attempt record; `field` is its hash field: the claim's lease token (a try number on records made before
    tokens existed)."""
    return _attempt_from(json.loads(text), lease_token=None if field is None or field.isdigit() else field)


def encode_rate(rate: RateLimit | None) -> str:
    """queue_settings.lua's rate argument: '-' for none, else the limit and its GCRA constants (computed here, once,
    by model.RateLimit, so the script applies the same formula as the other stores)."""
    if rate is None:
        return "-"
    return json.dumps(
        {
            "limit": rate.limit,
            "period": repr(float(rate.period)),
            "burst": rate.burst,
            "interval": str(rate.interval_us),
            "tolerance": str(rate.tolerance_us),
        }
    )


def decode_rate(doc: dict[str, Any]) -> RateLimit | None:
    """The rate limit of a stored queue settings document, if any."""
    rate = doc.get("rate")
    if not isinstance(rate, dict):
        return None
    return rate_from_columns(int(rate["limit"]), float(rate["period"]), rate.get("burst"))


def decode_queue_settings(namespace: str, queue: str, text: str) -> QueueSettings:
    """A queue's settings from its stored JSON document (P:qset)."""
    doc = json.loads(text)
    concurrency = doc.get("concurrency")
    key_concurrency = doc.get("key_concurrency")
    return QueueSettings(
        namespace,
        queue,
        paused=bool(doc.get("paused")),
        concurrency=None if concurrency is None else int(concurrency),
        rate_limit=decode_rate(doc),
        key_concurrency=None if key_concurrency is None else int(key_concurrency),
        rate_key=doc.get("rate_key"),
    )
