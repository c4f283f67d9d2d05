"""JSON documents that more than one store keeps as text: the worker registry's entries (SQLite's workers table,
Redis's worker keys). Written once here so the stores cannot drift apart; PostgreSQL keeps workers in columns."""

from __future__ import annotations

import json
from datetime import datetime

from conveyor.model import WorkerInfo

__all__ = ["worker_from_json", "worker_to_json"]


def worker_to_json(info: WorkerInfo) -> str:
    return json.dumps(
        {
            "id": info.id,
            "hostname": info.hostname,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at": info.started_at.isoformat(),
            "heartbeat_at": info.heartbeat_at.isoformat(),
            "expires_at": info.expires_at.isoformat(),
            "running": list(info.running),
            "version": info.version,
            "tasks": list(info.tasks),
        }
    )


def worker_from_json(text: str) -> WorkerInfo:
    d = json.loads(text)
    return WorkerInfo(
        id=d["id"],
        hostname=d["hostname"],
        pid=int(d["pid"]),
        queues=tuple(d["queues"]),
        concurrency=int(d["concurrency"]),
        started_at=datetime.fromisoformat(d["started_at"]),
        heartbeat_at=datetime.fromisoformat(d["heartbeat_at"]),
        expires_at=datetime.fromisoformat(d["expires_at"]),
        running=tuple(d.get("running", ())),
        version=d.get("version", ""),
        tasks=tuple(d.get("tasks", ())),
    )
