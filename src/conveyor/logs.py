"""Log output formats shared by every long-running entry point: one line per record, as text or as JSON.

Why here and not in the CLI: `app.run_worker()` (a user's own script) and `conveyor worker`/`serve` must print the
same lines, and a log collector (Loki, CloudWatch, Datadog) wants one JSON object per line from every process —
uvicorn's lines included — rather than a mix of formats it cannot parse. Only the standard library is used, so this
module sits at the bottom of the layers.

Records may carry job fields through `extra=` (the worker's failure lines do: `job_id`, `task`, `try`,
`max_attempts`, `error`, …): the JSON format writes them as keys of their own, so they can be queried without
parsing the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Final, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written as a JSON key.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, the fields
    given with `extra=`, and `exc_info`/`stack_info` as text. Values JSON cannot hold are written with `str()`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def check_format(value: str) -> LogFormat:
    """The format named by an option or CONVEYOR_LOG_FORMAT; a clear ValueError for anything else."""
    lowered = value.strip().lower()
    if lowered == "text":
        return "text"
    if lowered == "json":
        return "json"
    raise ValueError(f"log format {value!r} is not one of: text, json")


def check_level(value: str | int) -> int:
    """A level name (DEBUG, INFO, WARNING, ERROR, CRITICAL; any case) or number; a clear ValueError otherwise."""
    if isinstance(value, int):
        return value
    numeric = logging.getLevelName(value.strip().upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return numeric


def make_handler(fmt: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default: stdout stays the jobs' own output) writing `fmt` lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str | int, handler: logging.Handler) -> None:
    """Send every logger's records — Conveyor's, uvicorn's, the user's — through `handler` at `level`. Uvicorn's
    loggers are cleared of their own handlers and made to propagate, so the server writes one format too."""
    logging.basicConfig(level=check_level(level), handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def ensure_visible(level: int = logging.INFO) -> None:
    """For `app.run_worker()` in a plain script: if nothing configured logging, show Conveyor's INFO lines (the
    start line, failures, retries, dead letters) on stderr as the CLI does, instead of Python's default of
    WARNING-only bare messages. A program that configured logging itself is left exactly as it is."""
    root = logging.getLogger()
    conveyor = logging.getLogger("conveyor")
    if root.handlers or conveyor.handlers:
        return
    conveyor.addHandler(make_handler("text"))
    if conveyor.level == logging.NOTSET:
        conveyor.setLevel(level)
