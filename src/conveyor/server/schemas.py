"""Request and response models: the OpenAPI document is generated from these, and schemathesis checks that every
answer matches them. Bounds here (delay, priority, ttl) keep absurd numbers from reaching date arithmetic."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from conveyor.model import MAX_DELAY_SECONDS, MAX_INT_PARAMETER, MAX_TASK_NAME, NAME_PATTERN, UniqueOptions

MAX_BATCH = 1000


# ---- field types ------------------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def parse_rfc3339(value: object) -> datetime:
    """A time as RFC 3339 text with an offset (`2026-01-02T03:04:05Z`, `…+09:00`), nothing else: a number is not
    taken as Unix seconds, a time without an offset is refused rather than guessed."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with an offset, such as 2026-01-02T03:04:05Z")
    text = value.replace("z", "Z").replace("t", "T")
    fraction = re.search(r"\.(\d+)", text)
    if fraction is not None and len(fraction.group(1)) > 6:  # Python keeps microseconds: drop what is finer
        text = text.replace(fraction.group(0), fraction.group(0)[:7])
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a real date and time") from None


Rfc3339 = Annotated[
    datetime,
    BeforeValidator(parse_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "RFC 3339 with an offset"}),
]
NamespaceName = Annotated[str, Field(pattern=NAME_PATTERN, description="1–128 characters of [A-Za-z0-9-_.]")]
QueueName = Annotated[str, Field(pattern=NAME_PATTERN, description="1–128 characters of [A-Za-z0-9-_.]")]
TaskName = Annotated[
    str, Field(min_length=1, max_length=MAX_TASK_NAME, pattern=r"\S", description="A registered task's name")
]
Key = Annotated[str, Field(min_length=1, max_length=1024)]
STRICT = ConfigDict(strict=True)
"""Request bodies take JSON's own types: no `true` for an integer, no `0` for a boolean, no `"5"` for a number."""


# ---- requests ---------------------------------------------------------------------------------------------------


class UniqueBody(BaseModel):
    """`unique`: at most one job with the same `by` values created in one `period`, in any of `states`
    (docs/unique.md). Every field may be left out; `true` instead of an object takes every default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    by: list[Literal["task", "queue", "payload", "user"]] | None = Field(
        None, min_length=1, description="What makes two jobs the same (default task, queue, payload)"
    )
    fields: list[Key] | None = Field(
        None, min_length=1, max_length=64, description="Compare only these top-level payload fields"
    )
    period: float | None = Field(
        None, ge=0.001, le=MAX_DELAY_SECONDS, description="Seconds, aligned to the Unix epoch (null: no period)"
    )
    states: list[Literal["pending", "processing", "completed", "failed", "cancelled"]] | None = Field(
        None, description="Statuses in which a job counts (pending and processing always; default + completed)"
    )
    replace: list[Literal["payload", "run_at"]] | None = Field(
        None, description="What a duplicate writes on a pending holder"
    )

    def options(self) -> UniqueOptions:
        out: UniqueOptions = {}
        if self.by is not None:
            out["by"] = self.by
        if self.fields is not None:
            out["fields"] = self.fields
        if self.period is not None:
            out["period"] = self.period
        if self.states is not None:
            out["states"] = self.states
        if self.replace is not None:
            out["replace"] = self.replace
        return out


def unique_option(value: UniqueBody | None) -> UniqueOptions | None:
    """A body's `unique` as the enqueue option."""
    return None if value is None else value.options()


def _unique_shorthand(value: Any) -> Any:
    """`"unique": true` is the rule with every default (a union type would put its member names in error paths)."""
    if value is True:
        return {}
    if value is False:
        raise ValueError("give a rule object, true (every default), or null/nothing for no rule of this request's own")
    return value


class JobOptions(BaseModel):
    """Conveyor's optional fields, accepted by every enqueue endpoint."""

    model_config = STRICT

    namespace: NamespaceName | None = Field(None, description="Namespace (default `default`)")
    queue: QueueName | None = Field(None, description="Queue (default: the task's queue, else `default`)")
    priority: int | None = Field(None, ge=-32768, le=32767, description="Lower runs first (default 0)")
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS, description="Seconds to wait before running")
    user_id: Key | None = Field(None, description="Owner (GS2 per-user FIFO queue)")
    group_key: Key | None = Field(None, description="Jobs with the same group key run one at a time, in order")
    unique_key: Key | None = Field(None, description="An active job with this key makes the enqueue a no-op")
    concurrency_key: Key | None = Field(
        None, description="Jobs of one queue with this key run at most the queue's key_concurrency at once"
    )
    unique: Annotated[UniqueBody | None, BeforeValidator(_unique_shorthand)] = Field(
        None,
        description="A job matching this rule makes the enqueue answer the existing job with duplicate=true "
        "(not with unique_key)",
    )


class PBEnqueue(JobOptions):
    """PocketBase's enqueue body (`topic`, `payload`, `run_at`, `max_retries`) with Conveyor's options."""

    model_config = ConfigDict(extra="ignore", strict=True)

    topic: str | None = Field(None, max_length=MAX_TASK_NAME, description="Task name (required)")
    payload: Any = Field(default_factory=dict, description="Any JSON value (default {})")
    run_at: Rfc3339 | None = Field(None, description="RFC 3339 time with an offset to run at (default now)")
    max_retries: int | None = Field(None, ge=-MAX_INT_PARAMETER, le=100, description="Total tries (≤ 0 or absent → 3)")


class PBEnqueueBatch(BaseModel):
    model_config = STRICT

    jobs: list[PBEnqueue] = Field(..., min_length=1, max_length=MAX_BATCH)


class NewJobBody(JobOptions):
    """Conveyor's own enqueue body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: TaskName
    payload: Any = None
    run_at: Rfc3339 | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)


class UserJobBody(BaseModel):
    """One entry of a per-user push (GS2 JobEntry)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: TaskName
    payload: Any = None
    queue: QueueName | None = None
    priority: int | None = Field(None, ge=-32768, le=32767)
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS)
    max_attempts: int | None = Field(None, ge=1, le=100)
    unique_key: Key | None = None


class UserPushBody(BaseModel):
    model_config = STRICT

    jobs: list[UserJobBody] = Field(..., min_length=1, max_length=10)


class NamespaceBody(BaseModel):
    """Namespace settings; omitted fields keep their current value on update (defaults on create)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    description: str | None = Field(None, max_length=1024)
    auto_run: bool | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)
    completed_retention: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS, description="Seconds")
    failed_retention: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS, description="Seconds")
    push_notification: bool | None = None
    run_notification: bool | None = None
    webhook_url: str | None = Field(None, max_length=2048, description="http(s) URL; empty string removes it")
    webhook_secret: str | None = Field(None, max_length=1024, description="HMAC key; empty string removes it")
    run_retry_backoff: bool | None = Field(
        None, description="With auto_run off: apply the task's backoff to Run retries (default: due at once)"
    )
    webhook_allow_private: bool | None = Field(
        None, description="Allow webhooks to private, loopback and link-local addresses (default false)"
    )


class NamespaceCreate(NamespaceBody):
    name: NamespaceName


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Key
    namespace: NamespaceName | None = None
    ttl: float = Field(86_400.0, gt=0, le=366 * 86_400.0, description="Seconds until the token expires")


class DemoRegisterBody(BaseModel):
    """The go-webdb-template's register body; every field optional."""

    model_config = STRICT

    message: str | None = Field(None, max_length=65_536)
    delay_seconds: int | None = Field(None, ge=-MAX_INT_PARAMETER, le=10 * 366 * 86_400)
    max_retry: int | None = Field(None, ge=-MAX_INT_PARAMETER, le=100)


# ---- responses --------------------------------------------------------------------------------------------------


class PBJob(BaseModel):
    id: str
    topic: str
    payload: Any = None
    status: str
    run_at: str
    locked_until: str | None = None
    retries: int
    max_retries: int
    last_error: str | None = None
    created: str
    updated: str
    namespace: str
    queue: str
    priority: int
    attempts: int
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    duplicate: bool = False
    warnings: list[str] | None = Field(
        None, description="On enqueue answers only: tasks that no live worker has registered (the jobs wait)"
    )


class PBJobList(BaseModel):
    items: list[PBJob]
    total: int
    limit: int
    offset: int


class PBBatchAnswer(BaseModel):
    items: list[PBJob]
    warnings: list[str] | None = Field(
        None, description="On enqueue answers only: tasks that no live worker has registered (the jobs wait)"
    )


class PBStats(BaseModel):
    pending: int
    processing: int
    completed: int
    failed: int
    total: int
    success_rate: float
    cancelled: int
    scheduled: int


class OkAnswer(BaseModel):
    ok: bool


class JobOut(BaseModel):
    id: str
    namespace: str
    queue: str
    task: str
    payload: Any = None
    status: str
    scheduled: bool
    priority: int
    run_at: str
    attempts: int
    max_attempts: int
    try_number: int
    created: str
    updated: str
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    concurrency_key: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    lease_expires_at: str | None = None
    worker_id: str | None = None
    last_error: str | None = None
    result: Any = None
    cancel_requested: bool
    duplicate: bool
    timed_out_at: str | None = None
    overrunning: bool = False
    warnings: list[str] | None = Field(
        None, description="On enqueue answers only: tasks that no live worker has registered (the jobs wait)"
    )


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(
        None,
        description="Pass as `cursor` for the next page (null on the last page). A keyset: jobs consumed or added "
        "between pages never make the next page skip or repeat one",
    )
    warnings: list[str] | None = Field(
        None, description="On enqueue answers only: tasks that no live worker has registered (the jobs wait)"
    )


class JobsAnswer(BaseModel):
    items: list[JobOut]
    auto_run: bool
    warnings: list[str] | None = Field(
        None, description="On enqueue answers only: tasks that no live worker has registered (the jobs wait)"
    )


class AttemptOut(BaseModel):
    job_id: str
    try_number: int
    outcome: str
    status_code: int
    succeeded: bool
    started_at: str
    finished_at: str
    duration: float
    worker_id: str | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None


class AttemptList(BaseModel):
    items: list[AttemptOut]


class RunAnswer(BaseModel):
    job: JobOut | None
    attempt: AttemptOut | None
    is_last: bool


class NamespaceOut(BaseModel):
    name: str
    description: str
    auto_run: bool
    max_attempts: int
    completed_retention: float
    failed_retention: float
    push_notification: bool
    run_notification: bool
    webhook_url: str | None = None
    webhook_secret_set: bool
    run_retry_backoff: bool = False
    webhook_allow_private: bool = False
    extra: dict[str, Any]
    created: str | None = None
    updated: str | None = None
    revision: int


class NamespaceList(BaseModel):
    items: list[NamespaceOut]


class RateLimitOut(BaseModel):
    """At most `limit` claims per `period` seconds across every worker; `burst` claims may start at once after an
    idle spell (null: `limit`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(ge=1, le=2**31 - 1)
    period: float = Field(1.0, ge=0.001, le=7 * 86_400)
    burst: int | None = Field(None, ge=1, le=2**31 - 1)


class QueueOut(BaseModel):
    namespace: str
    name: str
    paused: bool
    concurrency: int | None = None
    rate_limit: RateLimitOut | None = None
    key_concurrency: int | None = None
    rate_key: str | None = None
    counts: dict[str, int]


class RateBucketOut(BaseModel):
    key: str | None = None
    tokens: int
    next_in: float
    next_at: str | None = None


class KeyLoadOut(BaseModel):
    key: str
    processing: int


class QueueFlowOut(BaseModel):
    processing: int
    processing_per_key: list[KeyLoadOut]
    rate: RateBucketOut | None = None
    rate_keys_limited: int
    rate_keys: list[RateBucketOut]
    rate_limited: bool
    due: int
    oldest_due_age: float | None = None


class QueueDetail(QueueOut):
    flow: QueueFlowOut


class QueuePatch(BaseModel):
    """A queue's settings to change; omitted fields keep their stored value, `null` removes a limit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    paused: bool | None = None
    concurrency: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Max processing jobs across all workers; null: no cap"
    )
    rate_limit: str | RateLimitOut | None = Field(
        None, description="Max claims per period across all workers: '100/s', '10/m', '3/10s' or an object; null: none"
    )
    rate_burst: int | None = Field(
        None, ge=1, le=2**31 - 1, description="The rate limit's burst (alone: changes the stored limit's burst)"
    )
    rate_key: str | None = Field(
        None,
        max_length=80,
        description="Partitions rate_limit, one bucket per value: 'user_id', 'group_key', 'concurrency_key' or "
        "'payload.<field>'; null: one bucket for the queue",
    )
    key_concurrency: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Max processing jobs per concurrency_key; null: no limit"
    )


class QueueList(BaseModel):
    items: list[QueueOut]


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: str | None = None
    heartbeat_at: str | None = None
    expires_at: str | None = None
    running: list[str]
    version: str
    leader_of: list[str] = []
    tasks: list[str] = []


class WorkerList(BaseModel):
    items: list[WorkerOut]


class StatsOut(BaseModel):
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    scheduled: int
    total: int
    success_rate: float


class TokenOut(BaseModel):
    token: str
    user_id: str
    namespace: str | None = None
    expires_at: str


class DemoRegisterAnswer(BaseModel):
    job_id: str
    status: str


class HealthOut(BaseModel):
    status: str
    store: str
