"""The demo task of SPEC §6, the go-webdb-template job: `demo:delay_print` prints a timestamped line.

It lives in its own module so that `conveyor worker --demo` and `conveyor serve --demo` (and the server's
`POST /api/dm-jobqueue/register`) share one handler and one set of defaults, exactly as the template's JobQueue
server and API server did.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from conveyor.logsafe import printable
from conveyor.model import JSON, MAX_ATTEMPTS_RANGE
from conveyor.runtime import SupportsRuntime
from conveyor.tasks import TaskSpec

DEMO_TASK = "demo:delay_print"
DEFAULT_MESSAGE = "Job executed successfully"
DEFAULT_DELAY_SECONDS = 180  # the template's register endpoint: delay_seconds ≤ 0 or absent → 180
DEFAULT_MAX_RETRY = 10  # max_retry ≤ 0 or absent → 10 (asynq MaxRetry: that many retries after the first try)


def demo_message(payload: JSON) -> str:
    """The message to print: the template's rule is that an empty payload or message prints the default.

    Anything that is not `{"message": "<text>"}` is an error (the template's worker failed to parse it and asynq
    retried), so it raises and the job is retried like any failure."""
    if payload is None or payload == {} or payload == "":
        return DEFAULT_MESSAGE
    if not isinstance(payload, dict):
        raise ValueError(f'{DEMO_TASK} expects a payload like {{"message": "..."}}, got {type(payload).__name__}')
    message = payload.get("message")
    if message is None or message == "":
        return DEFAULT_MESSAGE
    if not isinstance(message, str):
        raise ValueError(f"{DEMO_TASK}: payload field 'message' must be a string, got {type(message).__name__}")
    return message


def delay_print(payload: JSON) -> dict[str, str]:
    """Print `[YYYY-MM-DD HH:MM:SS] <message>` (local time, like Go's time.Now()) and flush at once, so the line
    shows up immediately even when stdout is a pipe or a log collector."""
    # The message is user data: control characters are shown escaped, so it stays one line (no forged lines, no
    # terminal escape sequences).
    line = f"[{datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {printable(demo_message(payload))}"
    # One write per line: print() writes the text and the newline separately, so lines of demo jobs running
    # at the same time in the worker's threads could interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return {"printed": line}


def register_demo(app: SupportsRuntime) -> TaskSpec:
    """Register `demo:delay_print` on the app (idempotent: returns the existing registration if present)."""
    rt = app.runtime
    existing = rt.tasks.get(DEMO_TASK)
    if existing is not None:
        return existing
    return rt.register(DEMO_TASK, delay_print)


def demo_enqueue_options(
    message: str | None = None, delay_seconds: float | None = None, max_retry: int | None = None
) -> dict[str, Any]:
    """The template's register defaults as `app.enqueue(DEMO_TASK, **options)` keyword arguments.

    asynq's MaxRetry counts retries after the first try, so `max_retry=10` means up to 11 attempts (capped at
    Conveyor's 100)."""
    retries = max_retry if max_retry is not None and max_retry > 0 else DEFAULT_MAX_RETRY
    delay = delay_seconds if delay_seconds is not None and delay_seconds > 0 else DEFAULT_DELAY_SECONDS
    return {
        "payload": {"message": message or DEFAULT_MESSAGE},
        "delay": float(delay),
        "max_attempts": min(retries + 1, MAX_ATTEMPTS_RANGE[1]),
    }
