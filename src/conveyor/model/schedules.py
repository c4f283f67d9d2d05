"""Cron schedules kept in the store (issue 13 item 5): their records and the runs they made."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.model.base import EPOCH, JSON, utcnow


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def occurrence_us(at: datetime) -> int:
    """An occurrence's instant as integer microseconds since the Unix epoch (the key of its run record)."""
    return (at - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A cron schedule made at runtime, as every store keeps it: one JSON document per name (`to_doc`), so a store
    holds (name, document) and never needs a migration when a setting is added. `options` are the enqueue
    options of its jobs (namespace, queue, priority, max_attempts, user_id, group_key, unique_key);
    `backfill_window` is in seconds."""

    name: str
    spec: str
    task: str
    payload: JSON = None
    timezone: str = "UTC"
    options: dict[str, Any] = field(default_factory=dict)
    backfill: str = "none"
    backfill_window: float = 86400.0
    enabled: bool = True
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def to_doc(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "spec": self.spec,
                "task": self.task,
                "payload": self.payload,
                "timezone": self.timezone,
                "options": self.options,
                "backfill": self.backfill,
                "backfill_window": self.backfill_window,
                "enabled": self.enabled,
                "created_at": _iso(self.created_at),
                "updated_at": _iso(self.updated_at),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_doc(cls, doc: str | bytes | Mapping[str, Any]) -> ScheduleRecord:
        d: Mapping[str, Any] = doc if isinstance(doc, Mapping) else json.loads(doc)
        return cls(
            name=str(d["name"]),
            spec=str(d["spec"]),
            task=str(d["task"]),
            payload=d.get("payload"),
            timezone=str(d.get("timezone") or "UTC"),
            options=dict(d.get("options") or {}),
            backfill=str(d.get("backfill") or "none"),
            backfill_window=float(d.get("backfill_window", 86400.0)),
            enabled=bool(d.get("enabled", True)),
            created_at=datetime.fromisoformat(d["created_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One occurrence of a schedule that a scheduler handled (or a manual trigger): the job it created (`job_id`;
    None when the occurrence was skipped, with the reason in `note`). Stores key runs by (schedule, occurrence) and
    keep the first record of an occurrence (`Store.record_schedule_run`)."""

    schedule: str
    occurrence: datetime
    job_id: str | None = None
    manual: bool = False
    note: str | None = None
    recorded_at: datetime = field(default_factory=utcnow)

    def to_doc(self) -> str:
        return json.dumps(
            {
                "schedule": self.schedule,
                "occurrence": _iso(self.occurrence),
                "job_id": self.job_id,
                "manual": self.manual,
                "note": self.note,
                "recorded_at": _iso(self.recorded_at),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_doc(cls, doc: str | bytes) -> ScheduleRun:
        d = json.loads(doc)
        return cls(
            schedule=str(d["schedule"]),
            occurrence=datetime.fromisoformat(d["occurrence"]),
            job_id=d.get("job_id"),
            manual=bool(d.get("manual", False)),
            note=d.get("note"),
            recorded_at=datetime.fromisoformat(d["recorded_at"]),
        )
