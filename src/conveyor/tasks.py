"""What a task is, and what the calls that create and run jobs take and give: the vocabulary every layer shares.

These types used to live in `app.py`, so everything that needed a `TaskSpec` (the executor, the worker) imported
the public facade, and the facade imported them back: a cycle. They sit here, below the runtime core, so that the
core, the worker, the maintenance services and the surfaces all read them from one place that imports nothing of
theirs.

The enqueue options are a `TypedDict` (`EnqueueOptions`), so `app.enqueue("t", p, quee="x")` is a type error in an
editor and in mypy, and a clear `TypeError` naming the option at run time (`check_options`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from conveyor.backoff import DEFAULT_BACKOFF, Backoff
from conveyor.errors import ValidationError
from conveyor.model import DEFAULT_NAMESPACE, DEFAULT_QUEUE, DEFAULT_TIMEOUT, JSON, Attempt, Job
from conveyor.model import UniqueOptions as UniqueOptions  # the enqueue options' vocabulary, re-exported

Handler = Callable[..., Any]

THREAD = "thread"
PROCESS = "process"
ISOLATIONS = (THREAD, PROCESS)


def validate_isolation(value: object, what: str = "isolation") -> str | None:
    """Where a sync handler runs: "thread" (the worker's pool), "process" (a child it can kill), None (default)."""
    if value is None or value in ISOLATIONS:
        return value  # type: ignore[return-value]
    raise ValidationError(
        f"{what} must be 'thread' (sync handlers in the worker's thread pool) or 'process' (in child processes the "
        f"worker can kill on timeout or cancel), got {value!r}",
        field="isolation",
    )


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task: its handler and the policy the worker applies to its jobs."""

    name: str
    fn: Handler
    is_async: bool
    max_attempts: int | None = None  # None: the namespace's default (3)
    timeout: float = DEFAULT_TIMEOUT
    backoff: Backoff = DEFAULT_BACKOFF
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    transactional: bool = False
    takes_context: bool = True
    isolation: str | None = None
    """"thread" or "process" for a sync handler; None: the worker's default (`Worker(isolation=...)`, "thread")."""
    unique: UniqueOptions | bool | None = None
    """The default `unique=` of the task's jobs (an enqueue's own `unique=` replaces it; `unique=False` drops it)."""


def takes_context(fn: Handler) -> bool:
    """Whether a handler takes `(payload, ctx)` rather than `(payload)`: two or more positional parameters."""
    params = [
        p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(params) >= 2


@dataclass(frozen=True, slots=True)
class RunResult:
    """Answer of `run_next` (GS2 Run): the job executed, its attempt record, and `is_last`: no pending job of the
    user remains, due or scheduled. `job` and `attempt` are None when nothing was due (`is_last` is then False
    if a job scheduled for later still waits)."""

    job: Job | None
    attempt: Attempt | None
    is_last: bool


class EnqueueOptions(TypedDict, total=False):
    """The options of one job (`enqueue`, `enqueue_many` entries, `cron`): each may be left out.

    A task's registration gives the defaults of `queue`, `priority` and `max_attempts`; the namespace's settings
    give `max_attempts` when neither the caller nor the task did."""

    namespace: str
    queue: str | None
    priority: int | None
    delay: float | timedelta | None
    run_at: datetime | None
    max_attempts: int | None
    user_id: str | None
    group_key: str | None
    unique_key: str | None
    concurrency_key: str | None
    unique: UniqueOptions | bool | None


class JobOptions(EnqueueOptions, total=False):
    """Enqueue options plus the ones Conveyor's own callers set: a job id chosen in advance (a cron occurrence's,
    a webhook delivery's, a restored job's) and the clock reading of a batch."""

    job_id: str | None
    now: datetime | None


class CronOptions(TypedDict, total=False):
    """The enqueue options a cron schedule may carry (the schedule decides when, so no delay, run_at or job_id)."""

    namespace: str
    queue: str | None
    priority: int | None
    max_attempts: int | None
    user_id: str | None
    group_key: str | None
    unique_key: str | None


ENQUEUE_OPTIONS = frozenset(EnqueueOptions.__annotations__)
CRON_OPTIONS = frozenset(CronOptions.__annotations__)
JOB_OPTIONS = frozenset(JobOptions.__annotations__) | ENQUEUE_OPTIONS


def check_options(options: Mapping[str, Any], allowed: frozenset[str] = ENQUEUE_OPTIONS, *, where: str = "") -> None:
    """A clear TypeError for an option nobody reads (a misspelling would otherwise be dropped or reach
    `NewJob.build` as an unexpected keyword): it names the option and lists the ones there are."""
    unknown = [key for key in options if key not in allowed]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise TypeError(
            f"{where or 'enqueue'}: unknown option{'s' if len(unknown) > 1 else ''} {names}; "
            f"the options are {', '.join(sorted(allowed))}"
        )


@dataclass(slots=True)
class EnqueueSpec:
    """One entry of `enqueue_many`. Dicts with the same keys are accepted too."""

    task: str
    payload: JSON = None
    namespace: str = DEFAULT_NAMESPACE
    queue: str | None = None
    priority: int | None = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    concurrency_key: str | None = None
    unique: UniqueOptions | bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The entry as the mapping form `enqueue_many` also takes (unset options left out)."""
        values = {
            "task": self.task,
            "payload": self.payload,
            "namespace": self.namespace,
            "queue": self.queue,
            "priority": self.priority,
            "delay": self.delay,
            "run_at": self.run_at,
            "max_attempts": self.max_attempts,
            "user_id": self.user_id,
            "group_key": self.group_key,
            "unique_key": self.unique_key,
            "concurrency_key": self.concurrency_key,
            "unique": self.unique,
            **self.extra,
        }
        return {k: v for k, v in values.items() if v is not None or k in ("task", "payload")}


class WorkerOptions(TypedDict, total=False):
    """The keyword arguments of `Worker(app, ...)`, taken by `run_worker`/`arun_worker` (see conveyor.worker)."""

    queues: Sequence[str] | Mapping[str, int]
    """Queues to serve: a list, or {queue: weight} for weighted claims (docs/weighted-queues.md)."""
    strict: bool
    """Claim from the queues in their given order: a lower one only when every higher one has nothing claimable."""
    namespaces: Sequence[str] | None
    concurrency: int
    poll_interval: float
    lease: timedelta | float | None
    grace_period: float
    worker_id: str | None
    maintenance: bool
    install_signal_handlers: bool
    batch_size: int | None
    heartbeat_interval: float | None
    rescue_interval: float | None
    prefetch: int | None
    leader_lease: float | None
    isolation: str
