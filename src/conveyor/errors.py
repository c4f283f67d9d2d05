"""Every error Conveyor raises on purpose.

Each error carries a message that says what was wrong and what to do about it, and an HTTP status so that the
REST API can answer with the same words the Python API raises (one source of truth for error text).
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(ConveyorError):
    """Input broke a rule; nothing was stored. `field` names the offending field when there is one."""

    status_code = 400
    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(ValidationError):
    """The JSON-encoded payload is larger than the configured limit (1 MiB by default)."""

    status_code = 413
    code = "payload_too_large"


class NotFound(ConveyorError):
    status_code = 404
    code = "not_found"


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job not found: {job_id}")
        self.job_id = job_id


class NamespaceNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Namespace not found: {name!r}. Create it first (conveyor namespaces create {name}).")
        self.name = name


class NamespaceExists(ConveyorError):
    """`create_namespace` found a namespace of that name already (`default` always exists): nothing was changed.
    Surfaces say how to change it instead (an update)."""

    status_code = 409
    code = "namespace_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"Namespace {name!r} already exists; update it instead of creating it.")
        self.name = name


class RevisionConflict(ConveyorError):
    """A compare-and-set write of a namespace (`put_namespace(expected_revision=…)`) found that someone else changed
    it since it was read: nothing was written. Read it again and re-apply the change (`Store.update_namespace`
    does exactly that)."""

    status_code = 409
    code = "revision_conflict"

    def __init__(self, name: str, expected: int, found: int | None = None) -> None:
        now = "" if found is None else f" (it is at revision {found} now)"
        super().__init__(
            f"Namespace {name!r} was changed by someone else since revision {expected}{now}; read it again and retry."
        )
        self.name = name
        self.expected = expected
        self.found = found


class SchemaTooNew(ConveyorError):
    """The store was migrated by a newer Conveyor than this one: its schema has steps this code does not know, and
    running older code on it could damage jobs. Nothing was changed."""

    code = "schema_too_new"

    def __init__(self, where: str, found: str, known: str) -> None:
        super().__init__(
            f"{where} has schema version {found}, newer than this Conveyor knows (up to {known}): it was migrated by "
            "a newer Conveyor. Upgrade Conveyor here (pip install -U conveyor-queue) before using this store."
        )
        self.found = found
        self.known = known


class InvalidTransition(ConveyorError):
    """The job is not in a state that allows the requested change (e.g. requeue of a pending job)."""

    status_code = 400
    code = "invalid_state"


class Conflict(ConveyorError):
    """Another job of the same user/group is processing: GS2's "Job queue execution conflict. Retry required."."""

    status_code = 409
    code = "conflict"


class TaskNotRegistered(ConveyorError):
    status_code = 400
    code = "task_not_registered"

    def __init__(self, task: str) -> None:
        super().__init__(
            f"No handler is registered for task {task!r}. Register it with @app.task({task!r}) "
            "in the process that runs the worker."
        )
        self.task = task


class TaskAlreadyRegistered(ConveyorError):
    code = "task_already_registered"

    def __init__(self, task: str) -> None:
        super().__init__(f"Task {task!r} is already registered; each task name maps to exactly one handler.")
        self.task = task


class StoreUnavailable(ConveyorError):
    """The backing store cannot be reached right now. Safe to retry later; nothing was acknowledged."""

    status_code = 503
    code = "store_unavailable"


class CallerConnectionError(ConveyorError):
    """The connection passed as `enqueue(..., connection=...)` cannot take the jobs: it is closed, broken, in a
    failed transaction, or not in a transaction at all (autocommit or idle) while one is required. The caller's
    connection is at fault, not the store: Conveyor cannot reconnect it, and retrying the same call cannot help."""

    status_code = 400
    code = "caller_connection"


REQUIRE_TRANSACTION_HINT = (
    "enqueue on your connection inside a transaction that you commit (psycopg: `with conn.transaction():`; "
    "sqlite3: run your own statements first or `BEGIN`; SQLAlchemy: `with engine.begin() as conn:` or a Session "
    "that has started its work), or pass require_transaction=False to let the jobs commit with whatever comes next "
    "on that connection (at once in autocommit mode)"
)


class AddressInUse(ConveyorError):
    """`conveyor serve` could not listen: another process has the port (or the address is not this machine's).
    Raised before anything is printed or opened, so a supervisor sees one clear failure."""

    code = "address_in_use"

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot listen on {host}:{port} ({reason}); is another server running there? "
            "Stop it, or pick another port with --port"
        )
        self.host = host
        self.port = port


class UnsupportedURL(ConveyorError):
    code = "unsupported_url"

    def __init__(self, url: str) -> None:
        super().__init__(
            f"Unsupported store URL {url!r}. Use sqlite:///path/to/file.db, postgresql://user@host/db, "
            "redis://host:6379/0 or memory://."
        )


class Unsupported(ConveyorError):
    """The feature exists but not on this store (e.g. transactional handlers on Redis)."""

    status_code = 400
    code = "unsupported"


# ---- handler outcomes: raised by task handlers to steer what happens next --------------------------------------


class Retry(Exception):
    """Raise from a handler to retry the job later. `delay` is seconds (None → the task's backoff)."""

    def __init__(self, delay: float | None = None, *, reason: str = "retry requested", status_code: int = 503) -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
        self.status_code = status_code


class Snooze(Exception):
    """Raise (or return) from a handler to run the job again after `seconds`, without counting an attempt.

    Why not Retry: a snooze is not a failure — the handler found the work not ready yet (a quota, an upstream not
    ready, a rate it must respect) and asks to be called again later. The try is kept in the job's history (an
    attempt with outcome `snoozed`), `try_number` moves on, but `attempts` — what `max_attempts` counts — does not,
    so a job may snooze any number of times."""

    def __init__(self, seconds: float, *, reason: str = "snoozed") -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= 10 * 366 * 86_400.0  # also refuses NaN
        ):
            raise ValidationError(f"Snooze takes seconds from 0 to ten years, got {seconds!r}", field="seconds")
        super().__init__(reason)
        self.seconds = float(seconds)
        self.reason = reason


class Fail(Exception):
    """Raise from a handler to fail the job permanently (dead letter) without further retries.

    `status_code` is recorded on the attempt (GS2 JobResult). Codes 402, 409, 500, 502, 503 and 504 are
    retryable under GS2's rules, so raising Fail with one of them retries instead of failing at once.
    """

    def __init__(self, reason: str = "failed", *, status_code: int = 400, result: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.result = result


class ScheduleNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Schedule not found: {name!r}. `conveyor schedules list` shows the schedules there are.")
        self.name = name


class ScheduleExists(ConveyorError):
    """A runtime schedule was created under a name a schedule has already (one made at runtime, or one declared in
    code with `app.cron`): nothing was changed."""

    status_code = 409
    code = "schedule_exists"

    def __init__(self, name: str, *, in_code: bool = False) -> None:
        where = (
            "is declared in code (app.cron); give the runtime schedule another name"
            if in_code
            else "exists already; update it instead of creating it"
        )
        super().__init__(f"Schedule {name!r} {where}.")
        self.name = name
        self.in_code = in_code


class ScheduleDeclaredInCode(ConveyorError):
    """A change was asked of a schedule declared in code (`app.cron`): such schedules are read-only at runtime."""

    status_code = 409
    code = "schedule_declared_in_code"

    def __init__(self, name: str, action: str) -> None:
        super().__init__(
            f"Schedule {name!r} is declared in code (app.cron) and cannot be {action} at runtime: change or remove it "
            "in the app (trigger and history work for it)."
        )
        self.name = name
