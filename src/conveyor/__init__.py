"""Conveyor: a job queue for Python that starts embedded on SQLite and grows onto PostgreSQL or Redis."""

from __future__ import annotations

from conveyor.app import Conveyor
from conveyor.backoff import Backoff
from conveyor.context import JobContext
from conveyor.errors import (
    Conflict,
    ConveyorError,
    Fail,
    InvalidTransition,
    JobNotFound,
    NotFound,
    PayloadTooLarge,
    Retry,
    ScheduleDeclaredInCode,
    ScheduleExists,
    ScheduleNotFound,
    Snooze,
    StoreUnavailable,
    TaskNotRegistered,
    ValidationError,
)
from conveyor.logsafe import install as _install_log_escaping
from conveyor.model import (
    Attempt,
    AttemptOutcome,
    Job,
    JobFilter,
    JobStatus,
    Namespace,
    QueueSettings,
    RateLimit,
    RawJSON,
    Stats,
)
from conveyor.tasks import EnqueueOptions, EnqueueSpec, RunResult, TaskSpec, UniqueOptions
from conveyor.version import __version__
from conveyor.worker import Worker

_install_log_escaping()  # control characters from user data never reach a log line raw (conveyor.logsafe)


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
    "QueueSettings",
    "RateLimit",
    "RawJSON",
    "Retry",
    "RunResult",
    "ScheduleDeclaredInCode",
    "ScheduleExists",
    "ScheduleNotFound",
    "Snooze",
    "Stats",
    "StoreUnavailable",
    "TaskNotRegistered",
    "TaskSpec",
    "UniqueOptions",
    "ValidationError",
    "Worker",
    "__version__",
]
