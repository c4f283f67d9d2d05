"""Conveyor: a job queue for Python that starts embedded on SQLite and grows onto PostgreSQL or Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.app import Conveyor
from conveyor.backoff import Backoff
from conveyor.errors import (
    Conflict,
    ConveyorError,
    Fail,
    InvalidTransition,
    JobNotFound,
    NotFound,
    PayloadTooLarge,
    Retry,
    StoreUnavailable,
    TaskNotRegistered,
    ValidationError,
)
from conveyor.logsafe import install as _install_log_escaping
from conveyor.model import Attempt, AttemptOutcome, Job, JobFilter, JobStatus, Namespace, RawJSON, Stats
from conveyor.tasks import EnqueueOptions, EnqueueSpec, RunResult, TaskSpec
from conveyor.version import __version__

_install_log_escaping()  # control characters from user data never reach a log line raw (conveyor.logsafe)

if TYPE_CHECKING:
    from conveyor.context import JobContext
    from conveyor.worker import Worker


__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Backoff",
    "Conflict",
    "Conveyor",
    "ConveyorError",
    "EnqueueOptions",
    "EnqueueSpec",
    "Fail",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobFilter",
    "JobNotFound",
    "JobStatus",
    "Namespace",
    "NotFound",
    "PayloadTooLarge",
    "RawJSON",
    "Retry",
    "RunResult",
    "Stats",
    "StoreUnavailable",
    "TaskNotRegistered",
    "TaskSpec",
    "ValidationError",
    "Worker",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "JobContext":
        from conveyor.context import JobContext

        return JobContext
    if name == "Worker":
        from conveyor.worker import Worker

        return Worker
    raise AttributeError(name)
