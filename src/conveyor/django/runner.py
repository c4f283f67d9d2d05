"""The Conveyor handler that runs one Django task in a worker.

Each Django task that uses a Conveyor backend is registered as a Conveyor task named by its module path
(`myapp.tasks.send_welcome`), so the admin UI, the CLI and the stats show Django tasks by name. The handler looks the
task up in the backend's registry (filled when the task's module is imported: see `backend.Binding`) — never by
importing a path read from a job — and calls its function with the job's args and kwargs:

- a plain function runs in the worker's thread pool, with Django's database connections of that thread closed
  where stale before and after, as Django does around a request (`close_old_connections`);
- an `async def` task runs on the worker's event loop;
- `takes_context=True` tasks get a `TaskContext` whose `task_result` is the running result (`attempt` counts this
  try);
- the return value goes through Django's `normalize_json` (a value JSON cannot hold fails the try, as in Django);
- an exception fails the try: Conveyor records it (text and traceback) and retries it while tries remain; the note
  added here names its class for `TaskError.exception_class_path` (see `results.py`). `conveyor.Retry` and
  `conveyor.Fail` work as in any Conveyor task (retry at a chosen time / fail without retrying).

Django's `task_started` signal is sent before the call and `task_finished` once the result is final (success, or
the last try failed), as Django's own backends do.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections, reset_queries

from conveyor.django._compat import (
    AnyResult,
    AnyTask,
    TaskContext,
    TaskError,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)
from conveyor.django.results import NOTE_PREFIX, arguments, class_path, django_time, to_task_result
from conveyor.errors import Fail, Retry
from conveyor.model import RETRYABLE_STATUS_CODES, Attempt, utcnow

if TYPE_CHECKING:
    from conveyor.context import JobContext

log = logging.getLogger("conveyor.django")


class Binding(Protocol):
    """What a handler needs of the backend's binding (`backend.Binding`): its alias, the backend class that sends
    Django's signals, and the registry of declared tasks. A protocol, so this module does not import the backend
    that imports it."""

    alias: str
    backend_class: type[Any]

    def task(self, name: str) -> AnyTask | None: ...


def make_handler(binding: Binding, name: str, is_async: bool) -> Callable[..., Any]:
    """The Conveyor handler for the Django task `name` (its module path)."""
    if is_async:

        async def run_async(payload: Any, ctx: JobContext) -> Any:
            task, args, kwargs = _prepare(binding, name, payload)
            history = await ctx.app.aattempts(ctx.job_id) if ctx.app is not None and ctx.try_number > 1 else []
            result = _running(binding, task, ctx, args, kwargs, history)
            task_started.send(sender=binding.backend_class, task_result=result)
            try:
                if task.takes_context:
                    value = await task.func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = await task.func(*args, **kwargs)
                value = normalize_json(value)
            except BaseException as exc:
                _failed(binding, result, ctx, exc)
                raise
            finally:
                await sync_to_async(close_old_connections)()
            _succeeded(binding, result, value)
            return value

        run_async.__qualname__ = run_async.__name__ = f"django_task[{name}]"
        return run_async

    def run_sync(payload: Any, ctx: JobContext) -> Any:
        task, args, kwargs = _prepare(binding, name, payload)
        reset_queries()
        close_old_connections()
        try:
            history = ctx.app.attempts(ctx.job_id) if ctx.app is not None and ctx.try_number > 1 else []
            result = _running(binding, task, ctx, args, kwargs, history)
            task_started.send(sender=binding.backend_class, task_result=result)
            try:
                if task.takes_context:
                    value = task.func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = task.func(*args, **kwargs)
                value = normalize_json(value)
            except BaseException as exc:
                _failed(binding, result, ctx, exc)
                raise
            _succeeded(binding, result, value)
            return value
        finally:
            close_old_connections()

    run_sync.__qualname__ = run_sync.__name__ = f"django_task[{name}]"
    return run_sync


def _prepare(binding: Binding, name: str, payload: Any) -> tuple[AnyTask, list[Any], dict[str, Any]]:
    task = binding.task(name)
    if task is None:  # registered handlers always have their task; kept for a registry emptied meanwhile
        raise LookupError(f"the Django task {name!r} is not known to this worker")
    parsed = arguments(payload)
    if parsed is None:
        raise Fail(
            f"job payload is not a Django task's ({{'args': [...], 'kwargs': {{...}}}}); enqueue {name!r} through "
            "Django's API (task.enqueue(...))",
            status_code=422,
        )
    return task, parsed[0], parsed[1]


def _running(
    binding: Binding,
    task: AnyTask,
    ctx: JobContext,
    args: list[Any],
    kwargs: dict[str, Any],
    history: list[Attempt],
) -> AnyResult:
    return to_task_result(task, ctx.job, history, binding.alias, args, kwargs, running_worker=ctx.worker_id or "")


def _failed(binding: Binding, result: AnyResult, ctx: JobContext, exc: BaseException) -> None:
    """Name the exception's class in a note (read back by results.task_error), and send `task_finished` if this
    failure is final. A cancellation (timeout, cancel request, shutdown) is not the task's failure: Conveyor's
    worker decides what it means and records it."""
    if not isinstance(exc, Exception):
        return
    path = class_path(type(exc))
    text = "".join(traceback.format_exception(exc))  # before the note: Django shows the traceback as it was
    note = f"{NOTE_PREFIX}{path}"
    notes = getattr(exc, "__notes__", None)
    if not (isinstance(notes, list) and note in notes):
        exc.add_note(note)
    if isinstance(exc, Retry):
        final = False
    elif isinstance(exc, Fail):
        final = exc.status_code not in RETRYABLE_STATUS_CODES or ctx.is_last_attempt
    else:
        final = ctx.is_last_attempt
    if not final:
        log.warning(
            "Task id=%s path=%s failed on try %d of %d and will run again: %s: %s",
            result.id,
            result.task.module_path,
            ctx.attempt,
            ctx.job.max_attempts,
            type(exc).__name__,
            exc,
        )
        return
    errors = [*result.errors, TaskError(exception_class_path=path, traceback=text)]
    object.__setattr__(result, "errors", errors)
    object.__setattr__(result, "status", TaskResultStatus.FAILED)
    object.__setattr__(result, "finished_at", _now())
    task_finished.send(sender=binding.backend_class, task_result=result)


def _succeeded(binding: Binding, result: AnyResult, value: Any) -> None:
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", _now())
    object.__setattr__(result, "_return_value", value)
    task_finished.send(sender=binding.backend_class, task_result=result)


def _now() -> Any:
    return django_time(utcnow())
