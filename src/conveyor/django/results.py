"""Conveyor jobs seen as Django `TaskResult`s, and the errors of failed tries as `TaskError`s.

A Django task runs as a Conveyor job whose task name is the task's module path and whose payload is
`{"args": [...], "kwargs": {...}}`. Everything else a `TaskResult` holds comes from the job and its attempt records:

| Django                | Conveyor                                                                            |
|-----------------------|-------------------------------------------------------------------------------------|
| `id`                  | the job id (a UUIDv7)                                                               |
| `status`              | pending → READY (also between tries), processing → RUNNING, completed → SUCCESSFUL, |
|                       | failed and cancelled → FAILED                                                       |
| `enqueued_at`         | `job.created`                                                                       |
| `started_at`          | the first try's start                                                               |
| `last_attempted_at`   | the latest try's start                                                              |
| `finished_at`         | `job.finished_at` (set once the job is completed, failed or cancelled)              |
| `worker_ids`          | one per try, in order (so `attempts` counts the tries)                              |
| `errors`              | one `TaskError` per failed try, in order                                            |
| `return_value`        | `job.result` of a completed job                                                     |
| `task.priority`       | minus the job's priority (Django: higher runs first; Conveyor: lower runs first)    |

Why the exception's class is recorded in a note: Conveyor's attempt record keeps the error text (`ValueError: …`)
and the traceback, not the class's import path that `TaskError.exception_class_path` needs. The worker adds a note
naming it to the exception before Conveyor formats it (`runner.py`); here the note is read back and taken out of
the traceback Django shows.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from conveyor import errors as conveyor_errors
from conveyor.django._compat import AnyResult, AnyTask, InvalidTask, TaskError, TaskResult, TaskResultStatus
from conveyor.django.errors import TaskCancelled, TaskLost
from conveyor.model import LOST_STATUS_CODE, Attempt, AttemptOutcome, Job, JobStatus

NOTE_PREFIX = "[conveyor.django] exception class: "
"""The first words of the note the worker adds to a task's exception; the rest of the line is the class path."""

_STATUS = {
    JobStatus.PENDING: TaskResultStatus.READY,
    JobStatus.PROCESSING: TaskResultStatus.RUNNING,
    JobStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_TIMEOUT_STATUS = 504
_CANCELLED_STATUS = 499


def class_path(cls: type[BaseException]) -> str:
    """How Django names an exception class in `TaskError.exception_class_path`."""
    return f"{cls.__module__}.{cls.__qualname__}"


def arguments(payload: object) -> tuple[list[Any], dict[str, Any]] | None:
    """The task's args and kwargs from a job payload, or None when the payload is not a Django task's."""
    if not isinstance(payload, dict) or set(payload) != {"args", "kwargs"}:
        return None
    args, kwargs = payload["args"], payload["kwargs"]
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    return args, kwargs


def django_time(value: datetime | None) -> datetime | None:
    """Conveyor's aware UTC datetimes as Django expects them: aware with USE_TZ, else naive in TIME_ZONE."""
    if value is None or settings.USE_TZ:
        return value
    naive: datetime = timezone.make_naive(value, timezone.get_default_timezone())
    return naive


def task_as_enqueued(task: AnyTask, job: Job, backend: str) -> AnyTask:
    """The task with the backend, priority and queue its job was enqueued with (`Task.using`), as Django's own
    result would carry it. A job whose values the backend would not accept today (settings changed since) keeps
    the task as declared."""
    priority = -job.priority
    if priority == task.priority and job.queue == task.queue_name and backend == task.backend:
        return task
    try:
        return task.using(priority=priority, queue_name=job.queue, backend=backend)
    except InvalidTask:
        return task


def task_error(attempt: Attempt) -> TaskError:
    """A failed try as Django's TaskError: the exception's class path and the traceback (or the error text)."""
    traceback = attempt.traceback or ""
    path, traceback = split_note(traceback)
    if path is None:
        path = _class_path_of(attempt)
    return TaskError(exception_class_path=path, traceback=traceback or attempt.error or "")


def split_note(traceback: str) -> tuple[str | None, str]:
    """(class path, traceback without the note) from a formatted traceback the worker annotated."""
    if NOTE_PREFIX not in traceback:
        return None, traceback
    lines = traceback.splitlines(keepends=True)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(NOTE_PREFIX):  # the outermost exception's note (nested ones are indented)
            path = lines[index][len(NOTE_PREFIX) :].strip()
            return path, "".join(lines[:index] + lines[index + 1 :])
    return None, traceback


def _class_path_of(attempt: Attempt) -> str:
    """The class of a failed try that carries no note: ends the worker decided (lost, cancelled, timed out), or
    errors raised outside the task function."""
    if attempt.status_code == LOST_STATUS_CODE or attempt.outcome is AttemptOutcome.LOST:
        return class_path(TaskLost)
    if attempt.outcome is AttemptOutcome.CANCELLED or attempt.status_code == _CANCELLED_STATUS:
        return class_path(TaskCancelled)
    if attempt.outcome is AttemptOutcome.TIMEOUT or attempt.status_code == _TIMEOUT_STATUS:
        return class_path(TimeoutError)
    # `traceback` prints an exception's last line as `module.Qualname: message` (bare for builtins), and Conveyor's
    # error text starts with the class name: try both, the traceback first.
    for text in (_last_exception_line(attempt.traceback or ""), attempt.error or ""):
        match = _EXCEPTION_LINE.match(text)
        if match is None:
            continue
        name = match.group(1)
        if "." in name:
            return name
        if isinstance(getattr(conveyor_errors, name, None), type):
            return f"conveyor.errors.{name}"
        if isinstance(getattr(builtins, name, None), type):
            return f"builtins.{name}"
    if not attempt.traceback:
        # The one failure Conveyor records with neither a traceback nor a class name: a `Retry` the task raised.
        return class_path(conveyor_errors.Retry)
    return class_path(Exception)


def _last_exception_line(traceback: str) -> str:
    for line in reversed(traceback.splitlines()):
        if line and not line[0].isspace() and _EXCEPTION_LINE.match(line):
            return line
    return ""


def to_task_result(
    task: AnyTask,
    job: Job,
    attempts: Sequence[Attempt],
    backend: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    running_worker: str | None = None,
) -> AnyResult:
    """Build the TaskResult of `job`. `running_worker`: the worker running the current try, which has no attempt
    record yet (a processing job; the worker passes its own id when it builds the context of a try)."""
    tries = sorted(attempts, key=lambda a: a.try_number)
    status = _STATUS[job.status]
    worker_ids = [a.worker_id or "" for a in tries]
    current = running_worker or (job.worker_id if job.status is JobStatus.PROCESSING else None)
    if current is not None:
        worker_ids.append(current)
    errors = [task_error(a) for a in tries if not a.succeeded]
    if job.status is JobStatus.CANCELLED and (not tries or tries[-1].outcome is not AttemptOutcome.CANCELLED):
        errors.append(
            TaskError(
                exception_class_path=class_path(TaskCancelled),
                traceback=job.last_error or "cancelled through Conveyor before it ran",
            )
        )
    first_start = tries[0].started_at if tries else job.started_at
    last_start = job.started_at if current is not None else (tries[-1].started_at if tries else None)
    result: AnyResult = TaskResult(
        task=task_as_enqueued(task, job, backend),
        id=job.id,
        status=status,  # type: ignore[arg-type]  # (TextChoices members type as their tuples)
        enqueued_at=django_time(job.created),
        started_at=django_time(first_start),
        finished_at=django_time(job.finished_at) if job.status.is_final else None,
        last_attempted_at=django_time(last_start),
        args=args,
        kwargs=kwargs,
        backend=backend,
        errors=errors,
        worker_ids=worker_ids,
    )
    if job.status is JobStatus.COMPLETED:
        object.__setattr__(result, "_return_value", job.result)
    return result
