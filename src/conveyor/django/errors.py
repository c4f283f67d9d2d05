"""Exceptions that name, in a Django `TaskError`, the ends of a try that no exception of the task caused.

Django's `TaskResult.errors` holds one `TaskError(exception_class_path, traceback)` per failed try, and
`TaskError.exception_class` imports that path. When a try ended without the task raising — its worker died, or the
job was cancelled through Conveyor — the path names one of these, so `exception_class` still gives a class.
(A timeout is named `TimeoutError`, as the worker reports it.)
"""

from __future__ import annotations


class TaskLost(Exception):
    """The worker running the try stopped without reporting it (killed, or cut off from the store): its lease ran
    out and Conveyor recorded the try as lost (status code 0). The task runs again while tries remain."""


class TaskCancelled(Exception):
    """The job was cancelled through Conveyor (`conveyor jobs cancel`, the admin UI or `Conveyor.cancel`), before
    or while it ran. Django has no cancelled status, so the result is FAILED with this error."""


__all__ = ["TaskCancelled", "TaskLost"]
