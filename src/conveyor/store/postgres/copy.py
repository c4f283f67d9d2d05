"""The COPY encoder: a large batch of jobs (no unique keys) is stored with one COPY, its rows built as one string of
COPY text format (PostgreSQL docs, "COPY", "Text Format")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor.model import NewJob

__all__ = ["COPY_THRESHOLD", "copy_text", "use_copy"]

COPY_THRESHOLD = 64  # below this a one-statement INSERT is as fast and simpler


def use_copy(jobs: Sequence[NewJob]) -> bool:
    return len(jobs) >= COPY_THRESHOLD and all(j.unique_key is None and j.unique_hash is None for j in jobs)


def copy_text(jobs: Sequence[NewJob]) -> str:
    """The batch as COPY text (tab-separated, `\\N` for NULL), built in one string: one `write` instead of an
    awaited `write_row` per job, which dominated batch enqueue. Column order matches ENQUEUE_COPY."""
    lines: list[str] = []
    last_created: datetime | None = None
    created = ""
    for j in jobs:
        if j.created is not last_created:  # a batch shares one creation instant: format it once
            last_created = j.created
            created = j.created.isoformat()
        run_at = created if j.run_at == j.created else j.run_at.isoformat()
        lines.append(
            "\t".join(
                (
                    j.id,
                    j.namespace,  # validated names: nothing to escape
                    j.queue,
                    _copy_escape(j.task),
                    _copy_escape(j.payload_json),
                    str(j.priority),
                    run_at,
                    str(j.max_attempts),
                    created,
                    created,
                    _copy_optional(j.user_id),
                    _copy_optional(j.group_key),
                    "\\N",
                    _copy_optional(j.serial_key),
                    _copy_optional(j.concurrency_key),
                )
            )
        )
    lines.append("")
    return "\n".join(lines)


def _copy_escape(value: str) -> str:
    """COPY text format escaping: backslash, tab, newline and carriage return become backslash sequences."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_optional(value: str | None) -> str:
    return "\\N" if value is None else _copy_escape(value)
