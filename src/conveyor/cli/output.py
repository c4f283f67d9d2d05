"""How the CLI shows things: JSON for scripts (`--json`), Rich tables for people.

JSON output is built from the model dataclasses field by field, so a script sees every field the Python API has,
with datetimes as ISO 8601 strings in UTC and enums as their string values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from conveyor.cli.common import console
from conveyor.model import JSON, Attempt, Job, JobStatus, Namespace, Stats, utcnow

STATUS_STYLE: Mapping[str, str] = {
    JobStatus.PENDING: "yellow",
    JobStatus.PROCESSING: "cyan",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "dim",
    "scheduled": "magenta",
}


def jsonable(value: Any) -> JSON:
    """Convert model values (dataclasses, enums, datetimes, mappings, sequences) into plain JSON values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [jsonable(v) for v in value]
    return value


def job_dict(job: Job) -> dict[str, JSON]:
    data: dict[str, JSON] = jsonable(job)
    data["scheduled"] = job.is_scheduled()
    data["overrunning"] = job.overrunning
    return data


def attempt_dict(attempt: Attempt) -> dict[str, JSON]:
    data: dict[str, JSON] = jsonable(attempt)
    data["duration"] = attempt.duration
    return data


def stats_dict(stats: Stats) -> dict[str, JSON]:
    data: dict[str, JSON] = jsonable(stats)
    data["total"] = stats.total
    data["success_rate"] = stats.success_rate
    return data


def namespace_dict(namespace: Namespace) -> dict[str, JSON]:
    data = namespace.to_dict()
    if data.get("webhook_secret"):
        data["webhook_secret"] = "***"  # shown only as set/unset; the secret stays in the store
    return data


def print_list(items: list[JSON], **more: JSON) -> None:
    """Every list command's `--json`: one shape, `{"items": [...], "total": N}` (plus paging fields where the list
    pages: `jobs list` adds limit, offset and next_cursor), so a script reads any list the same way."""
    print_json({"items": items, "total": len(items) if "total" not in more else more.pop("total"), **more})


def print_json(data: JSON) -> None:
    """Plain JSON on stdout (no colour, no wrapping), one document per command."""
    console.print_json(json.dumps(data, ensure_ascii=False, default=str), indent=2, highlight=False)


def when(value: datetime | None) -> str:
    """A UTC timestamp for tables: `2026-11-22 10:56:04`."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """A short relative time: `3s ago`, `in 2m`."""
    if value is None:
        return "-"
    delta = ((now or utcnow()) - value).total_seconds()
    future = delta < 0
    seconds = abs(delta)
    if seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def styled_status(job: Job) -> str:
    status = "scheduled" if job.is_scheduled() else job.status.value
    style = STATUS_STYLE.get(status, "")
    text = f"[{style}]{status}[/]" if style else status
    if job.overrunning:  # a sync handler past its timeout whose thread has not ended: its retry waits for it
        text += " [red](timed out, still running)[/]"
    return text


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `12h`, `7d` or `2w` (retention settings, leases)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    raw = text.strip().lower()
    factor = 1.0
    if raw and raw[-1] in units:
        factor = units[raw[-1]]
        raw = raw[:-1]
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; use seconds or a number with s, m, h, d or w") from None
    if value < 0:
        raise ValueError(f"{text!r}: a duration cannot be negative")
    return value * factor


def human_seconds(seconds: float) -> str:
    """The inverse of parse_duration for display: 604800 → `7d`, 5400 → `90m`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"
