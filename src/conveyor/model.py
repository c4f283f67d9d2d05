"""The job model: statuses, jobs, attempts, namespaces and the values that cross the store interface.

Everything here is plain data (frozen dataclasses) so every store, the worker, the HTTP API and the CLI speak the
same types. Times are timezone-aware UTC `datetime`s; stores choose their own storage format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Generic, Literal, TypedDict, TypeVar

from conveyor.errors import PayloadTooLarge, ValidationError
from conveyor.ids import new_job_id

JSON = Any
"""A value that survives `json.dumps` (dict, list, str, int, float, bool, None)."""

DEFAULT_NAMESPACE = "default"
DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_RANGE = (1, 100)
DEFAULT_PRIORITY = 0
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB, PocketBase's JobMaxPayloadSize
MAX_RESULT_BYTES = 5 * 1024 * 1024  # GS2 JobResult.result ≤ 5 MB
MAX_TASK_NAME = 1024
RESERVED_TASK_PREFIX = "conveyor:"
"""Task names under this prefix belong to Conveyor itself (webhook deliveries, future internals): no public
enqueue, registration or HTTP call may create them, so a caller can never forge one of Conveyor's own jobs."""
MAX_NAME = 128
DEFAULT_LEASE = timedelta(seconds=30)
DEFAULT_TIMEOUT = 300.0  # seconds, per task
RETRYABLE_STATUS_CODES = frozenset({402, 409, 500, 502, 503, 504})  # GS2 SDK's RecommendRetry table

_NAME_RE = re.compile(r"[A-Za-z0-9\-_.]{1,128}")
NAME_PATTERN = r"^[A-Za-z0-9\-_.]{1,128}$"
"""Namespace and queue names, as the OpenAPI document states them."""
MIN_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest `run_at` a job may have: every store keeps times as Unix-epoch numbers somewhere (Redis scores,
GS2's milliseconds), and a time before 1970 is a typo, not a schedule."""
MAX_DELAY_SECONDS = 10 * 366 * 86_400.0
"""Ten years: the furthest a job may be scheduled (`delay`, `run_at`); anything later is a mistake, not a plan."""
MAX_INT_PARAMETER = 2**31 - 1
"""The largest offset, count or try number any surface accepts (SQLite and PostgreSQL integers hold it)."""

_BAD_TEXT_RE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"  # dead letter: attempts exhausted or a permanent failure
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.PROCESSING)


class AttemptOutcome(StrEnum):
    """How one execution ended. Recorded on every attempt next to its GS2-style status code."""

    COMPLETED = "completed"  # 2xx
    RETRY = "retry"  # failed, will run again
    FAILED = "failed"  # failed, job dead-lettered
    LOST = "lost"  # worker died / lease expired; recorded by the rescuer
    TIMEOUT = "timeout"  # exceeded the task timeout (504); retried or failed like any failure
    CANCELLED = "cancelled"  # stopped on request while running
    SNOOZED = "snoozed"  # the handler asked to run again later (Snooze); the try did not count as an attempt


LOST_STATUS_CODE = 0  # GS2's "no connection / unknown" code: the worker vanished, nothing was returned


@dataclass(slots=True)
class Job:
    """One call of a task. `attempts` counts toward `max_attempts` (reset by requeue); `try_number` is the
    user-facing number of the latest try (never reset by requeue, but a graceful hand-back takes it back and a claim
    lost in a database crash repeats it). `lease_token` is the fencing token of the current claim: random, written
    by each claim, never repeated for the job, so it — not the try number — is what `finish` and `heartbeat` are
    fenced on (None unless the job is processing).

    A snapshot: read-only by convention (use dataclasses.replace for a changed copy). It is not a frozen
    dataclass because stores build one per claimed and enqueued job, and frozen construction costs ~3 µs more
    per job — a fifth of the whole per-job budget at 10,000 jobs/s. Hashed by id.
    """

    def __hash__(self) -> int:
        return hash(self.id)

    id: str
    namespace: str
    queue: str
    task: str
    payload: JSON
    status: JobStatus
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    try_number: int
    created: datetime
    updated: datetime
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    last_error: str | None = None
    result: JSON = None
    cancel_requested: bool = False
    lease_token: str | None = None
    duplicate: bool = False
    """True on the Job returned by enqueue when `unique_key` matched an active job and nothing new was stored."""
    payload_json: str | None = None
    """The payload's JSON text exactly as stored (as given, for a `RawJSON` payload). Filled by enqueue, `get_job`
    and `list_jobs` on every store; None on the claim path, which has no use for it (handlers get `payload`)."""
    timed_out_at: datetime | None = None
    """When a try of this job passed its timeout while its handler kept running (a plain function in a thread
    cannot be stopped): the worker keeps the lease until the thread ends, so the retry never overlaps it. Set by
    `Store.mark_timed_out`; it belongs to the current try only while it is not older than `started_at`."""
    concurrency_key: str | None = None
    """Jobs of one queue with the same key run at most `QueueSettings.key_concurrency` at once across every worker
    (per user, per tenant: flow control, docs/flow-control.md). None: only the queue's own limits apply."""

    @property
    def serial_key(self) -> str | None:
        """The lane whose jobs run one at a time, oldest first: the group key, else the user's queue."""
        return serial_key_for(self.group_key, self.user_id)

    @property
    def lease(self) -> Lease:
        """Proof of this snapshot's claim (a job that is not processing holds no lease: its token matches none)."""
        return Lease(self.id, self.lease_token or "")

    def is_scheduled(self, now: datetime | None = None) -> bool:
        return self.status is JobStatus.PENDING and self.run_at > (now or utcnow())

    @property
    def overrunning(self) -> bool:
        """ "Timed out, still running": the current try passed its timeout (504 is what it will record) but its
        thread has not ended yet, so the worker still holds the job and its retry waits."""
        return (
            self.status is JobStatus.PROCESSING
            and self.timed_out_at is not None
            and self.started_at is not None
            and self.timed_out_at >= self.started_at
        )


def serial_key_for(group_key: str | None, user_id: str | None) -> str | None:
    if group_key is not None:
        return f"g:{group_key}"
    if user_id is not None:
        return f"u:{user_id}"
    return None


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of a claim: the job id plus the claim's fencing token (`Job.lease_token`).

    Why a random token and not the try number: the try number repeats — a graceful hand-back takes it back, and a
    claim that a database crash loses (PostgreSQL with `fast_worker_commits`, Redis with appendfsync everysec) is
    made again under the same number — so two claims of one job could hold "try 1" at once. A token drawn at
    random by every claim (128 bits) never repeats, even when the write that recorded the previous one was lost."""

    job_id: str
    token: str


def new_lease_tokens(n: int) -> list[str]:
    """`n` fresh fencing tokens (32 hex digits each) from the operating system's randomness, in one call.

    Uniqueness must survive a crash that loses the store's last writes, so no counter kept in the store will do, and
    neither will a PRNG that other processes may share a seed with (Redis's `math.random`)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One execution of a job (GS2 JobResult).

    Attempts are keyed by (job_id, lease_token), one per claim, so two runs that carried the same try number (a
    claim lost in a crash and its replacement) are two records and never overwrite each other. `try_number` stays
    the user-facing number; `Store.attempts` lists them by `attempt_order`. `lease_token` is None on records made
    before fencing tokens existed."""

    job_id: str
    try_number: int
    outcome: AttemptOutcome
    status_code: int
    started_at: datetime
    finished_at: datetime
    worker_id: str | None = None
    result: JSON = None
    error: str | None = None
    traceback: str | None = None
    lease_token: str | None = None

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


def attempt_order(attempt: Attempt) -> tuple[int, int, datetime, str]:
    """How `Store.attempts` lists a job's records: by try number; within one number (a claim lost in a crash and
    the claim that replaced it) lost records first, so the last record of a number is the one that counted."""
    lost = 0 if attempt.outcome is AttemptOutcome.LOST else 1
    return (attempt.try_number, lost, attempt.started_at, attempt.lease_token or "")


def not_applied(attempt: Attempt) -> Attempt:
    """The record a store keeps for a try whose report was refused because its lease had been lost (a stale token):
    a LOST attempt (status code 0) that says what the try ended with, so history shows every run truthfully and the
    claim that did count keeps its own record."""
    if attempt.outcome is AttemptOutcome.LOST:
        return attempt
    return replace(attempt, outcome=AttemptOutcome.LOST, status_code=LOST_STATUS_CODE, error=not_applied_error(attempt))


def not_applied_error(attempt: Attempt) -> str | None:
    """The error text of `not_applied(attempt)` (stores that build the LOST record in SQL send it along)."""
    if attempt.outcome is AttemptOutcome.LOST:
        return attempt.error
    how = f"{attempt.status_code} {attempt.outcome.value}" + (f": {attempt.error}" if attempt.error else "")
    return f"lease lost: this try's outcome was not applied (it ended {how})"


@dataclass(slots=True)
class NewJob:
    """A validated job ready to be stored. Build it with `NewJob.build` which enforces every rule.

    Treat it as immutable (use dataclasses.replace); it is not frozen only because frozen dataclasses are
    several times slower to construct, and batch enqueue builds tens of thousands a second."""

    id: str
    namespace: str
    queue: str
    task: str
    payload: JSON
    payload_json: str
    priority: int
    run_at: datetime
    max_attempts: int
    created: datetime
    user_id: str | None = None
    group_key: str | None = None
    unique_key: str | None = None
    concurrency_key: str | None = None
    unique_hash: str | None = None
    """The job's uniqueness (`unique=`, see `UniqueOptions`): a digest of what it is unique by, with the period's
    bucket. Another job of the namespace with the same hash, in one of *its* `unique_states`, makes this one a
    duplicate. None: no such rule (the plain `unique_key` rule is apart)."""
    unique_states: int = 0
    """The statuses (bits of UNIQUE_STATE_BITS) in which this job keeps others of its `unique_hash` out."""
    unique_replace: int = 0
    """What a duplicate of this enqueue changes on a *pending* holder: REPLACE_PAYLOAD | REPLACE_RUN_AT."""

    @property
    def serial_key(self) -> str | None:
        return serial_key_for(self.group_key, self.user_id)

    @classmethod
    def build(
        cls,
        task: str,
        payload: JSON = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        queue: str = DEFAULT_QUEUE,
        priority: int = DEFAULT_PRIORITY,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        user_id: str | None = None,
        group_key: str | None = None,
        unique_key: str | None = None,
        concurrency_key: str | None = None,
        unique: UniqueOptions | bool | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        now: datetime | None = None,
        job_id: str | None = None,
    ) -> NewJob:
        now = now or utcnow()
        validate_task_name(task)
        validate_name(namespace, "namespace")
        validate_name(queue, "queue")
        if not isinstance(priority, int) or isinstance(priority, bool) or not -(2**15) <= priority < 2**15:
            raise ValidationError(
                f"priority must be an integer from -32768 to 32767 (lower runs first), got {priority!r}",
                field="priority",
            )
        attempts = DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts
        lo, hi = MAX_ATTEMPTS_RANGE
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not lo <= attempts <= hi:
            raise ValidationError(
                f"max_attempts must be an integer from {lo} to {hi}, got {attempts!r}", field="max_attempts"
            )
        if run_at is not None and delay is not None:
            raise ValidationError("give either run_at or delay, not both", field="delay")
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
            if (
                not isinstance(seconds, int | float)
                or isinstance(seconds, bool)
                or not 0 <= seconds <= MAX_DELAY_SECONDS  # also refuses NaN
            ):
                raise ValidationError(
                    f"delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f} (ten years), got {delay!r}",
                    field="delay",
                )
            run_at = now + timedelta(seconds=seconds)
        if run_at is None:
            run_at = now
        elif not isinstance(run_at, datetime):
            raise ValidationError(f"run_at must be a datetime, got {type(run_at).__name__}", field="run_at")
        elif run_at.tzinfo is None:
            raise ValidationError("run_at must be timezone-aware (e.g. datetime.now(UTC))", field="run_at")
        else:
            if run_at.tzinfo is not UTC:
                try:
                    run_at = run_at.astimezone(UTC)
                except OverflowError:  # e.g. 9999-12-31T23:59-14:00 is in the year 10000 in UTC
                    raise ValidationError(
                        f"run_at must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z once converted to UTC, "
                        f"got {run_at.isoformat()}",
                        field="run_at",
                    ) from None
            if run_at < MIN_RUN_AT:
                raise ValidationError(
                    f"run_at must be 1970-01-01T00:00:00Z or later, got {run_at.isoformat()}", field="run_at"
                )
        if user_id is not None or group_key is not None or unique_key is not None or concurrency_key is not None:
            for name, value in (
                ("user_id", user_id),
                ("group_key", group_key),
                ("unique_key", unique_key),
                ("concurrency_key", concurrency_key),
            ):
                if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 1024):
                    raise ValidationError(f"{name} must be a string of 1 to 1024 characters, got {value!r}", field=name)
                if value is not None:
                    check_text(value, name)
        if isinstance(payload, RawJSON):  # RawJSON, or CheckedJSON (checked and encoded by the caller)
            payload, payload_json = payload.decode(max_payload_bytes), payload.stored_text
        else:
            payload_json = encode_payload(payload, max_payload_bytes)
        rule = None
        if unique is not None and unique is not False:
            if unique_key is not None:
                raise ValidationError(
                    "give unique_key or unique, not both (unique_key is unique among active jobs: "
                    "unique={'by': [...], 'states': ['pending', 'processing']} says the same by other fields)",
                    field="unique",
                )
            rule = UniqueRule.parse({} if unique is True else unique)
        job = cls(
            id=job_id or new_job_id(),
            namespace=namespace,
            queue=queue,
            task=task,
            payload=payload,
            payload_json=payload_json,
            priority=priority,
            run_at=run_at,
            max_attempts=attempts,
            created=now,
            user_id=user_id,
            group_key=group_key,
            unique_key=unique_key,
            concurrency_key=concurrency_key,
        )
        if rule is not None:
            job.unique_hash = rule.digest(job)
            job.unique_states = rule.states
            job.unique_replace = rule.replace
        return job

    def to_job(self) -> Job:
        """The Job as it looks right after enqueue (what stores return)."""
        return Job(
            id=self.id,
            namespace=self.namespace,
            queue=self.queue,
            task=self.task,
            payload=self.payload,
            status=JobStatus.PENDING,
            priority=self.priority,
            run_at=self.run_at,
            attempts=0,
            max_attempts=self.max_attempts,
            try_number=0,
            created=self.created,
            updated=self.created,
            user_id=self.user_id,
            group_key=self.group_key,
            unique_key=self.unique_key,
            payload_json=self.payload_json,
            concurrency_key=self.concurrency_key,
        )


UniqueBy = Literal["task", "queue", "payload", "user"]
UniqueState = Literal["pending", "processing", "completed", "failed", "cancelled"]
UniqueReplace = Literal["payload", "run_at"]

UNIQUE_STATE_BITS: dict[str, int] = {"pending": 1, "processing": 2, "completed": 4, "failed": 8, "cancelled": 16}
"""A status's bit in `NewJob.unique_states` (the stores keep the mask as an integer column / hash field)."""
UNIQUE_ACTIVE = 3  # pending | processing: always part of a rule (a job moves between them by itself)
REPLACE_PAYLOAD = 1
REPLACE_RUN_AT = 2
UNIQUE_BY_DEFAULT: tuple[UniqueBy, ...] = ("task", "queue", "payload")
UNIQUE_STATES_DEFAULT: tuple[UniqueState, ...] = ("pending", "processing", "completed")


class UniqueOptions(TypedDict, total=False):
    """`unique=` of an enqueue or a task: at most one job of the namespace with the same (`by`) values, created in
    the same `period`, in any of `states` (docs/unique.md). Each key may be left out; `unique=True` takes every
    default.

    - `by`: what makes two jobs the same — any of "task", "queue", "payload", "user" (user_id); default task,
      queue and payload.
    - `fields`: compare only these top-level fields of the payload (an object), not the whole payload.
    - `period`: seconds (or a timedelta); the periods are aligned to the Unix epoch on the job's creation time
      (86400 is the UTC day). None (default): no period — unique for as long as a matching job is kept.
    - `states`: the statuses in which an existing job counts; pending and processing always do; add "completed",
      "failed", "cancelled". Default pending, processing, completed.
    - `replace`: on a duplicate whose holder is still pending, write this enqueue's "payload" and/or "run_at" on
      the holder (which is returned, `duplicate=True`)."""

    by: Sequence[UniqueBy]
    fields: Sequence[str]
    period: float | timedelta | None
    states: Sequence[UniqueState]
    replace: Sequence[UniqueReplace]


_UNIQUE_KEYS = frozenset(UniqueOptions.__annotations__)


def _names(value: object, allowed: Sequence[str] | frozenset[str], what: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence | frozenset | set):
        raise ValidationError(f"{what} must be a list of names (from {', '.join(allowed)}), got {value!r}", field=what)
    out = list(value)
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ValidationError(f"{what}: unknown {bad[0]!r}; choose from {', '.join(allowed)}", field=what)
    return out


@dataclass(frozen=True, slots=True)
class UniqueRule:
    """A checked `UniqueOptions`: what `NewJob.build` turns into the job's hash, states and replace bits."""

    by: tuple[str, ...]
    fields: tuple[str, ...] | None
    period_us: int | None
    states: int
    replace: int

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> UniqueRule:
        if not isinstance(options, Mapping):
            raise ValidationError(
                f"unique must be true or an object with by, fields, period, states, replace; got {options!r}",
                field="unique",
            )
        unknown = [k for k in options if k not in _UNIQUE_KEYS]
        if unknown:
            raise ValidationError(
                f"unique: unknown option {unknown[0]!r}; the options are {', '.join(sorted(_UNIQUE_KEYS))}",
                field=f"unique.{unknown[0]}",
            )
        by = _names(options.get("by", UNIQUE_BY_DEFAULT), ("task", "queue", "payload", "user"), "unique.by")
        if not by:
            raise ValidationError("unique.by must name at least one of task, queue, payload, user", field="unique.by")
        fields: tuple[str, ...] | None = None
        if options.get("fields") is not None:
            raw = options["fields"]
            if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
                raise ValidationError(
                    f"unique.fields must be a non-empty list of top-level payload field names, got {raw!r}",
                    field="unique.fields",
                )
            if not all(isinstance(f, str) and f for f in raw):
                raise ValidationError("unique.fields must hold non-empty strings", field="unique.fields")
            fields = tuple(sorted(set(raw)))
            if "payload" not in by:
                by.append("payload")
        period = options.get("period")
        period_us: int | None = None
        if period is not None:
            seconds = period.total_seconds() if isinstance(period, timedelta) else period
            if (
                not isinstance(seconds, int | float)
                or isinstance(seconds, bool)
                or not 0.001 <= seconds <= MAX_DELAY_SECONDS
            ):
                raise ValidationError(
                    f"unique.period must be a number of seconds from 0.001 to {MAX_DELAY_SECONDS:.0f} (or null: no "
                    f"period), got {period!r}",
                    field="unique.period",
                )
            period_us = round(seconds * 1_000_000)
        names = _names(options.get("states", UNIQUE_STATES_DEFAULT), tuple(UNIQUE_STATE_BITS), "unique.states")
        states = 0
        for name in names:
            states |= UNIQUE_STATE_BITS[name]
        if states & UNIQUE_ACTIVE != UNIQUE_ACTIVE:
            raise ValidationError(
                "unique.states must include pending and processing (a job moves between them by itself); add "
                "completed, failed or cancelled to also count finished jobs",
                field="unique.states",
            )
        replace_bits = 0
        for name in _names(options.get("replace", ()), ("payload", "run_at"), "unique.replace"):
            replace_bits |= REPLACE_PAYLOAD if name == "payload" else REPLACE_RUN_AT
        return cls(tuple(sorted(set(by))), fields, period_us, states, replace_bits)

    def digest(self, job: NewJob) -> str:
        """The job's unique hash: what it is unique by, hashed, then the period and the bucket of its creation."""
        scope: dict[str, Any] = {}
        if "task" in self.by:
            scope["task"] = job.task
        if "queue" in self.by:
            scope["queue"] = job.queue
        if "user" in self.by:
            scope["user"] = job.user_id
        if "payload" in self.by:
            if self.fields is None:
                scope["payload"] = job.payload
            elif not isinstance(job.payload, dict):
                raise ValidationError(
                    f"unique.fields compares payload fields, but the payload is a {type(job.payload).__name__}, "
                    f"not an object",
                    field="unique.fields",
                )
            else:
                scope["fields"] = [[f, f in job.payload, job.payload.get(f)] for f in self.fields]
        text = json.dumps(scope, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        if self.period_us is None:
            return digest
        created_us = (job.created - _EPOCH) // timedelta(microseconds=1)
        return f"{digest}/{self.period_us}/{created_us // self.period_us}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RawJSON:
    """A payload given as JSON text, kept exactly as written: `app.enqueue("grant", RawJSON('{"item": "sword"}'))`.

    Why: GS2 pushes `args` as a JSON string and reads back that same string; re-serialising it would change its
    spacing and key order. The handler still gets the parsed value; the text (less surrounding whitespace) is what
    the store keeps and `Job.payload_json` gives back. Strict JSON (no NaN/Infinity), within the payload limit."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValidationError(f"RawJSON takes the JSON text as a str, got {type(text).__name__}", field="payload")
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def stored_text(self) -> str:
        """What the stores keep: the text less any whitespace around it (PostgreSQL's json type trims it, so every
        store does, and all give back the same string)."""
        return self.text.strip(" \t\n\r")

    def decode(self, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> JSON:
        """The parsed value, after the checks every payload gets (valid JSON, no NUL or lone surrogate, size)."""
        text = self.text
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            raise PayloadTooLarge(
                f"payload is {len(text.encode())} bytes of JSON; the limit is {max_bytes} bytes. "
                "Store large data elsewhere and pass a reference, or raise max_payload_bytes.",
                field="payload",
            )
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"payload is not valid JSON text: {exc}", field="payload") from None
        if "\\u" in text or not text.isascii():  # NUL or a lone surrogate: no store can keep it
            check_json_text(value, "payload")
        return value


def _refuse_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not valid JSON")


_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_c_encoder() -> Callable[[JSON, int], Sequence[str]] | None:
    """The json module's C encoder, built once: `JSONEncoder.encode` rebuilds it on every call, which was half of
    the cost of encoding a small payload on the enqueue hot path. Same output and errors as _PAYLOAD_ENCODER."""
    if c_make_encoder is None:  # pragma: no cover - interpreters without the C accelerator
        return None
    encoder: Callable[[JSON, int], Sequence[str]] = c_make_encoder(
        {}, _not_json, encode_basestring, None, ":", ",", False, False, False
    )
    return encoder


_c_encoder = _make_c_encoder()


def _encode_json(payload: JSON) -> str:
    global _c_encoder
    if _c_encoder is None:
        return _PAYLOAD_ENCODER.encode(payload)
    try:
        return "".join(_c_encoder(payload, 0))
    except BaseException:
        _c_encoder = _make_c_encoder()  # a failed run can leave entries in its circular-reference markers
        raise


class CheckedJSON(RawJSON):
    """A payload already checked and encoded by its caller, handed over with its text so enqueue does not encode
    it again: the HTTP API parses a request once, checks and encodes its payload once (to answer 400/413 before any
    store call), and enqueues this. Build one with `CheckedJSON.encode(value)`; the text is the canonical encoding,
    not the caller's spelling (for that, use `RawJSON`)."""

    __slots__ = ("value",)

    def __init__(self, value: JSON, text: str) -> None:
        super().__init__(text)
        self.value = value

    @classmethod
    def encode(cls, value: JSON, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> CheckedJSON:
        """Check and encode `value` once (the checks of `encode_payload`: JSON only, no NUL or lone surrogate,
        within `max_bytes`)."""
        return cls(value, encode_payload(value, max_bytes))

    def decode(self, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> JSON:
        return self.value


def encode_payload(payload: JSON, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Serialise a payload, refusing non-JSON values and oversize payloads with a clear error."""
    try:
        text = _encode_json(payload)
    except RecursionError:
        raise ValidationError("payload is nested too deeply to encode as JSON", field="payload") from None
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"payload must be JSON-serialisable (dict, list, str, int, float, bool or None): {exc}", field="payload"
        ) from None
    # PostgreSQL cannot store NUL and nothing can encode a lone surrogate: no store accepts either. The encoder
    # writes NUL as the escape `\u0000` and a lone surrogate as itself (ensure_ascii=False), so both checks are
    # a scan in C that only an offending payload gets past.
    if ("\\u0000" in text and _contains_nul(payload)) or (not text.isascii() and _SURROGATE_RE.search(text)):
        check_json_text(payload, "payload")
    if len(text) * 4 <= max_bytes:  # UTF-8 needs at most 4 bytes a character: surely within the limit
        return text
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes when JSON-encoded; the limit is {max_bytes} bytes. "
            "Store large data elsewhere and pass a reference, or raise max_payload_bytes.",
            field="payload",
        )
    return text


def _contains_nul(value: JSON) -> bool:
    """Whether any string (key or value) inside a JSON value holds NUL. Only called when the encoded text hints so."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


def encode_result(result: JSON) -> str:
    """Serialise a handler's return value for its attempt record (≤ 5 MiB, GS2's limit)."""
    try:
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"task result must be JSON-serialisable: {exc}", field="result") from None
    if not text.isascii() and _SURROGATE_RE.search(text):
        check_json_text(result, "result")
    if len(text) > MAX_RESULT_BYTES:
        raise PayloadTooLarge(f"task result is {len(text)} bytes; the limit is {MAX_RESULT_BYTES}", field="result")
    return text


# ---- text that every store and every wire format can carry ---------------------------------------------------


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or sent, or None. NUL cannot be kept in PostgreSQL text or JSONB; a lone
    UTF-16 surrogate (JSON's `"\\ud800"` without its pair) is not Unicode at all and cannot be encoded as UTF-8,
    so no store, log or answer can carry it. Both are refused on every surface alike."""
    found = _BAD_TEXT_RE.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "must not contain the NUL character (\\u0000); encode binary data as base64"
    return (
        f"contains a lone UTF-16 surrogate (\\u{ord(char):04x}) at character {found.start()}, which is not valid "
        "Unicode; send the character itself, or both halves of its surrogate pair"
    )


def check_text(value: str, field: str) -> None:
    """Raise ValidationError naming `field` if `value` holds NUL or a lone surrogate (see text_problem)."""
    if value.isascii() and "\x00" not in value:
        return
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}", field=field)


def find_bad_text(value: JSON, path: str, *, depth: int = 0) -> tuple[str, str] | None:
    """The path (`payload.items[2].name`, or `payload.<key>` for a bad key) and problem of the first string in a
    JSON value that cannot be stored (see text_problem), or None."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (path, problem)
    if depth > 200:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                problem = text_problem(key)
                if problem is not None:
                    return (f"{path}.{_printable_key(key)}", f"has a key that {problem}")
            found = find_bad_text(item, f"{path}.{_printable_key(key)}", depth=depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_bad_text(item, f"{path}[{index}]", depth=depth + 1)
            if found is not None:
                return found
    return None


def check_json_text(value: JSON, field: str) -> None:
    """Raise ValidationError naming the exact place (`payload.a[1]`) of a string that cannot be stored."""
    found = find_bad_text(value, field)
    if found is not None:
        where, problem = found
        raise ValidationError(f"{where} {problem}", field=where)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (JSON numbers are finite); send a number or null")


def loads_json(text: str | bytes, field: str) -> JSON:
    """Parse JSON text strictly, for every surface that reads JSON from outside (HTTP bodies, GS2 `args`, the
    CLI's payload argument): `NaN`/`Infinity` (which Python's parser accepts but JSON does not have) and strings
    that no store can keep (lone surrogates, NUL) are refused with a ValidationError naming the place."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValidationError(f"{field} is nested too deeply", field=field) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the constants above
        raise ValidationError(f"{field} is not valid JSON: {exc}", field=field) from None
    check_json_text(value, field)
    return value


def _printable_key(key: object) -> str:
    text = str(key)
    return _BAD_TEXT_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)[:64]


_VALID_NAMES: set[str] = set()  # names already checked (few distinct ones; saves a regex per enqueue)


def validate_name(value: object, what: str) -> None:
    if isinstance(value, str) and value in _VALID_NAMES:
        return
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 characters of letters, digits, '-', '_' or '.', got {value!r}", field=what
        )
    if len(_VALID_NAMES) < 10_000:
        _VALID_NAMES.add(value)


_VALID_TASKS: set[str] = set()  # task names already checked (saves the checks per enqueue)


def validate_task_name(task: object) -> None:
    if isinstance(task, str) and task in _VALID_TASKS:
        return
    if not isinstance(task, str) or not task.strip():
        raise ValidationError("task is required: give the name of a registered task", field="task")
    if not task.isascii() or "\x00" in task:
        problem = text_problem(task)
        if problem is not None:
            raise ValidationError(f"task name {problem}", field="task")
    if len(task) > MAX_TASK_NAME:
        raise ValidationError(f"task name is {len(task)} characters; the limit is {MAX_TASK_NAME}", field="task")
    if len(_VALID_TASKS) < 10_000:
        _VALID_TASKS.add(task)


def is_reserved_task(task: object) -> bool:
    """Whether `task` is one of Conveyor's own task names (`conveyor:...`)."""
    return isinstance(task, str) and task.startswith(RESERVED_TASK_PREFIX)


def check_public_task_name(task: object, field: str = "task") -> None:
    """The rule every public way in (Python enqueue and register, cron, HTTP, CLI) applies: `conveyor:` names
    are reserved. Conveyor's internals create their jobs through `conveyor.enqueue.enqueue_system` instead."""
    if is_reserved_task(task):
        raise ValidationError(
            f"task {task!r} is reserved: names starting with {RESERVED_TASK_PREFIX!r} belong to Conveyor's own "
            "jobs (e.g. webhook deliveries) and cannot be enqueued or registered by callers; choose another name",
            field=field,
        )


# ---- values passed to Store.finish ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finish:
    """What a worker reports at the end of one try. The store applies it only if the job is still processing
    under the same lease (id + fencing token); otherwise the report is stale: it changes nothing, and its attempt,
    if any, is kept as a LOST record of its own (`not_applied`) unless that claim already has a record.

    `status` is the job's next status: COMPLETED, PENDING (retry at `run_at`; None: at once, by the store's own
    clock), FAILED (dead letter) or CANCELLED.
    `release=True` hands the job back without counting the try (graceful shutdown): status PENDING, attempts and
    try_number decremented, no Attempt record, run_at unchanged unless given (so it keeps its place in the order).
    Otherwise `attempt` is the record to store for this try.
    `snooze=True` (the handler raised or returned `Snooze`): status PENDING at `run_at`, the attempt recorded (its
    outcome SNOOZED) and try_number kept, but `attempts` decremented — the try does not count toward max_attempts;
    `last_error` is kept unless `error` is given.
    """

    lease: Lease
    status: JobStatus
    attempt: Attempt | None = None
    run_at: datetime | None = None
    error: str | None = None
    result: JSON = None
    release: bool = False
    snooze: bool = False


@dataclass(frozen=True, slots=True)
class LeaseState:
    """Answer to a heartbeat for one lease."""

    lease: Lease
    held: bool  # False: the job was rescued, deleted or re-claimed; stop reporting on it
    cancel_requested: bool = False


# ---- namespaces, queues, workers, stats -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Namespace:
    """An isolated space with its own settings (GS2 namespace). Stores persist it as one JSON document."""

    name: str
    description: str = ""
    auto_run: bool = True
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    completed_retention: float = 7 * 86400.0  # seconds
    failed_retention: float = 30 * 86400.0
    push_notification: bool = False
    run_notification: bool = False
    webhook_url: str | None = None
    webhook_secret: str | None = None
    run_retry_backoff: bool = False
    """Where Run consumes the jobs (auto_run off), a retryable failure leaves the job at the head of its user's
    queue, due at once, so the next Run takes it again (GS2's flow). True applies the task's backoff instead."""
    webhook_allow_private: bool = False
    """Deliver webhooks to private, loopback and link-local addresses too (a receiver on the same machine or
    network). Off by default: a webhook URL must not be a way to reach internal services (SSRF)."""
    extra: Mapping[str, JSON] = field(default_factory=dict)  # GS2 passthrough settings (transactionSetting…)
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    revision: int = 0

    def to_dict(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "description": self.description,
            "auto_run": self.auto_run,
            "max_attempts": self.max_attempts,
            "completed_retention": self.completed_retention,
            "failed_retention": self.failed_retention,
            "push_notification": self.push_notification,
            "run_notification": self.run_notification,
            "webhook_url": self.webhook_url,
            "webhook_secret": self.webhook_secret,
            "run_retry_backoff": self.run_retry_backoff,
            "webhook_allow_private": self.webhook_allow_private,
            "extra": dict(self.extra),
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON]) -> Namespace:
        values = dict(data)
        for key in ("created", "updated"):
            if isinstance(values.get(key), str):
                values[key] = datetime.fromisoformat(values[key])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


DEFAULT_NAMESPACE_SETTINGS = Namespace(name=DEFAULT_NAMESPACE, auto_run=True)


def validate_namespace(ns: Namespace) -> None:
    """Every rule a namespace's settings follow, whichever surface wrote them (API, GS2, Python): a valid name,
    settings of the right types and ranges, and text that every store can keep."""
    validate_name(ns.name, "namespace")
    for name in ("auto_run", "push_notification", "run_notification", "webhook_allow_private"):
        if not isinstance(getattr(ns, name), bool):
            raise ValidationError(f"{name} must be true or false, got {getattr(ns, name)!r}", field=name)
    lo, hi = MAX_ATTEMPTS_RANGE
    if not isinstance(ns.max_attempts, int) or isinstance(ns.max_attempts, bool) or not lo <= ns.max_attempts <= hi:
        raise ValidationError(f"max_attempts must be an integer from {lo} to {hi}", field="max_attempts")
    for name in ("completed_retention", "failed_retention"):
        value = getattr(ns, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10 * 366 * 86_400:
            raise ValidationError(f"{name} must be a number of seconds from 0 to ten years", field=name)
    if not isinstance(ns.description, str) or len(ns.description) > 1024:
        raise ValidationError("description must be text of at most 1024 characters", field="description")
    check_text(ns.description, "description")
    for name, limit in (("webhook_url", 2048), ("webhook_secret", 1024)):
        value = getattr(ns, name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise ValidationError(f"{name} must be text of at most {limit} characters", field=name)
        check_text(value, name)
    check_json_text(dict(ns.extra), "extra")


_RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h|d)\s*")
MAX_RATE_PERIOD = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` claims per `period` seconds from one queue, across every worker and process.

    Why a GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): the store keeps a single
    number per queue (the theoretical arrival time) and updates it inside the claim's own atomic step, so the limit
    holds however many workers claim at once, and an idle queue costs nothing. `burst` is how many claims may start
    at once after an idle spell (the bucket's size; default: `limit`, one period's worth)."""

    limit: int
    period: float = 1.0
    burst: int | None = None

    def __post_init__(self) -> None:
        for name, value, top in (("limit", self.limit, MAX_INT_PARAMETER), ("burst", self.burst, MAX_INT_PARAMETER)):
            if value is None and name == "burst":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValidationError(
                    f"rate {name} must be a whole number from 1 to {top}, got {value!r}", field="rate_limit"
                )
        p = self.period
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.001 <= p <= MAX_RATE_PERIOD:
            raise ValidationError(
                f"a rate limit's period must be from 0.001 s to 7 days, got {p!r}", field="rate_limit"
            )

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> RateLimit:
        """`"100/s"`, `"10/m"`, `"5/h"`, `"1000/d"`, `"3/10s"` (3 per 10 seconds)."""
        m = _RATE_RE.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise ValidationError(
                f"a rate limit is written N/unit or N/<count><unit> with unit s, m, h or d (e.g. '100/s', '10/m', "
                f"'3/10s'), got {text!r}",
                field="rate_limit",
            )
        return cls(int(m.group(1)), float(m.group(2) or 1) * _RATE_UNITS[m.group(3)], burst)

    @property
    def interval_us(self) -> int:
        """Microseconds between two claims at the steady rate (the GCRA's emission interval), at least 1."""
        return max(1, round(self.period * 1_000_000 / self.limit))

    @property
    def tolerance_us(self) -> int:
        """How far ahead of now the theoretical arrival time may run: (burst - 1) intervals."""
        return (self.effective_burst - 1) * self.interval_us

    @property
    def effective_burst(self) -> int:
        return self.limit if self.burst is None else self.burst

    def __str__(self) -> str:
        period = f"{self.period:g}s" if self.period != 1 else "s"
        return f"{self.limit}/{period}" + ("" if self.burst is None else f" (burst {self.burst})")


def rate_from_columns(limit: int | None, period: float | None, burst: int | None) -> RateLimit | None:
    """A stored rate limit (three columns / fields, limit NULL when there is none) as a RateLimit."""
    if limit is None:
        return None
    return RateLimit(int(limit), float(period) if period is not None else 1.0, None if burst is None else int(burst))


def rate_allowance(rate: RateLimit, tat_us: int | None, now_us: int) -> tuple[int, int]:
    """How many claims the GCRA allows at `now_us` given the stored theoretical arrival time `tat_us`, and the
    microseconds from now until the next one is allowed (0 when some are allowed now). The memory and SQLite stores
    call this; PostgreSQL's claim and Redis's Lua compute the same formula (store/*/queries, lua/common.lua)."""
    t = rate.interval_us
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    slack = now_us + rate.tolerance_us - tat
    if slack < 0:
        return 0, -slack
    return slack // t + 1, 0


def rate_advance(rate: RateLimit, tat_us: int | None, now_us: int, taken: int) -> int:
    """The theoretical arrival time after `taken` claims at `now_us`."""
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    return tat + taken * rate.interval_us


RATE_KEY_FIELDS = ("user_id", "group_key", "concurrency_key")
_RATE_KEY_PAYLOAD = re.compile(r"payload\.([A-Za-z_][A-Za-z0-9_]{0,63})")
RATE_KEY_FORMS = "'user_id', 'group_key', 'concurrency_key' or 'payload.<field>' (a top-level payload field)"


def check_rate_key(value: object) -> str | None:
    """A queue's `rate_key` (what partitions its rate limit into one bucket per value), or None for one bucket for
    the whole queue: a job column (`user_id`, `group_key`, `concurrency_key`) or `payload.<field>`, a top-level
    field of the payload whose name is letters, digits and `_` (at most 64)."""
    if value is None:
        return None
    if isinstance(value, str) and (value in RATE_KEY_FIELDS or _RATE_KEY_PAYLOAD.fullmatch(value)):
        return value
    raise ValidationError(f"rate_key must be {RATE_KEY_FORMS} (or null for none), got {value!r}", field="rate_key")


def rate_key_value(
    rate_key: str, user_id: str | None, group_key: str | None, concurrency_key: str | None, payload: object
) -> str:
    """The rate-limit bucket of a job in a queue partitioned by `rate_key` (the memory and SQLite stores call this;
    PostgreSQL's rate_key_of function and Redis's rate_key_of in common.lua compute the same). A payload field
    counts when it is a string or an integer (written as its decimal digits); any other value, a missing field and
    an empty string all mean the one shared bucket of jobs without a key, `""`."""
    if rate_key == "user_id":
        value: object = user_id
    elif rate_key == "group_key":
        value = group_key
    elif rate_key == "concurrency_key":
        value = concurrency_key
    else:
        value = payload.get(rate_key[8:]) if isinstance(payload, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value) if abs(value) < 2**53 else ""
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class RateState:
    """A queue's rate limiter state as stored (`Store.rate_state`), read by the store's clock `now_us`: the queue's
    own bucket (`queue_tat`: its theoretical arrival time, None = a full bucket) and, for a queue partitioned by
    `rate_key`, how many keys hold state (a key whose bucket is full again holds none: it is forgotten) and the
    `keys` (key, tat) furthest behind, the most limited first. `model.rate_allowance` turns a tat into tokens left
    and the wait for the next one."""

    now_us: int
    queue_tat: int | None = None
    key_count: int = 0
    keys: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True, slots=True)
class RateBucket:
    """One rate-limit bucket as `Conveyor.aqueue_flow` reports it: the queue's own (`key` None) or a rate key's;
    `tokens` claims allowed now, `next_in` seconds until the next one (0 while tokens are left)."""

    key: str | None
    tokens: int
    next_in: float


def rate_bucket(rate: RateLimit, key: str | None, tat_us: int | None, now_us: int) -> RateBucket:
    tokens, wait_us = rate_allowance(rate, tat_us, now_us)
    return RateBucket(key, tokens, wait_us / 1e6)


@dataclass(frozen=True, slots=True)
class QueueFlow:
    """What a queue's limits are doing now (`Conveyor.aqueue_flow`): its settings, processing jobs in all and for
    the busiest concurrency keys, the rate limiter's buckets (the queue's, or with a `rate_key` how many keys hold
    state and the most limited of them), the pending jobs due now and how long the oldest of them has waited."""

    settings: QueueSettings
    processing: int
    busiest_keys: Sequence[tuple[str, int]]  # (concurrency key, processing jobs), most first
    rate: RateBucket | None  # the queue's bucket (a rate limit without rate_key)
    limited_keys: int  # rate_key queues: keys whose bucket is not full
    most_limited: Sequence[RateBucket]  # rate_key queues: the keys furthest behind, out of tokens first
    due: int  # pending jobs whose run_at has come (waiting for a worker, a lane or a limit)
    oldest_due_age: float | None  # seconds since the run_at of the earliest due job, None when none is due

    @property
    def rate_limited(self) -> bool:
        """Whether the rate limit holds jobs back now: the queue's bucket, or some key's, is out of tokens."""
        if self.settings.rate_limit is None:
            return False
        if self.rate is not None:
            return self.rate.tokens == 0
        return any(b.tokens == 0 for b in self.most_limited)


class Keep(Enum):
    KEEP = "keep"


KEEP = Keep.KEEP
"""`QueueChange`'s "leave this setting as it is"."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's settings in one namespace. Why they travel whole but are written by `QueueChange`: pause/resume
    and the limits are set by different people at different times, and none of them may erase another's."""

    namespace: str
    name: str
    paused: bool = False
    concurrency: int | None = None  # max processing jobs across all workers; None = unlimited
    rate_limit: RateLimit | None = None  # max claims per period across all workers; None = unlimited
    key_concurrency: int | None = None  # max processing jobs per Job.concurrency_key; None = unlimited
    rate_key: str | None = None  # partitions rate_limit: one bucket per value (check_rate_key); None = one bucket


@dataclass(frozen=True, slots=True)
class QueueChange:
    """Some of a queue's settings, the rest kept (`KEEP`): what `Store.update_queue_settings` applies atomically.
    None for `concurrency` / `rate_limit` removes that limit."""

    paused: bool | Keep = KEEP
    concurrency: int | Keep | None = KEEP
    rate_limit: RateLimit | Keep | None = KEEP
    key_concurrency: int | Keep | None = KEEP
    rate_key: str | Keep | None = KEEP

    def apply(self, settings: QueueSettings) -> QueueSettings:
        return QueueSettings(
            settings.namespace,
            settings.name,
            paused=settings.paused if self.paused is KEEP else self.paused,
            concurrency=settings.concurrency if self.concurrency is KEEP else self.concurrency,
            rate_limit=settings.rate_limit if self.rate_limit is KEEP else self.rate_limit,
            key_concurrency=settings.key_concurrency if self.key_concurrency is KEEP else self.key_concurrency,
            rate_key=settings.rate_key if self.rate_key is KEEP else self.rate_key,
        )


def check_queue_settings(settings: QueueSettings) -> None:
    for name in ("concurrency", "key_concurrency"):
        c = getattr(settings, name)
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= MAX_INT_PARAMETER):
            raise ValidationError(f"queue {name} must be ≥ 0 (or None for no limit)", field=name)
    if settings.rate_limit is not None and not isinstance(settings.rate_limit, RateLimit):
        raise ValidationError("rate_limit must be a RateLimit (or None for no limit)", field="rate_limit")
    check_rate_key(settings.rate_key)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    namespace: str
    name: str
    paused: bool
    counts: Mapping[str, int]  # status -> count, plus "scheduled" (pending with run_at in the future)
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    key_concurrency: int | None = None
    rate_key: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker registration. Expires by itself when `expires_at` passes without a heartbeat."""

    id: str
    hostname: str
    pid: int
    queues: Sequence[str]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    running: Sequence[str] = ()  # job ids
    version: str = ""
    tasks: Sequence[str] = ()  # the task names it registered, which are the only ones it claims
    leader_of: Sequence[str] = ()
    """The maintenance roles this worker holds right now ("maintenance", "scheduler"): not stored with the
    registration but filled in from `Store.leaders()` when workers are listed (`Conveyor.alist_workers`)."""


@dataclass(frozen=True, slots=True)
class Leadership:
    """An elected role (`Store.elect`): who holds `name`, under which term, for how much longer.

    `term` grows by one every time the role changes hands (or its holder takes it again after letting it lapse),
    never on a renewal, so a holder can tell a renewal from a fresh election. `expires_in` is measured by the
    store's clock at the moment it answered: seconds until the lease lapses unless renewed (≤ 0: lapsed)."""

    name: str
    holder: str
    term: int
    expires_in: float
    held: bool = False  # True when the candidate that asked holds it (after Store.elect)


@dataclass(frozen=True, slots=True)
class Stats:
    pending: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    scheduled: int = 0  # subset of pending whose run_at is in the future

    @property
    def total(self) -> int:
        return self.pending + self.processing + self.completed + self.failed + self.cancelled

    @property
    def success_rate(self) -> float:
        """PocketBase's rule: completed / (completed + failed), 0 when neither."""
        done = self.completed + self.failed
        return self.completed / done if done else 0.0


class JobSort(StrEnum):
    """The orders a job list can take (`Store.list_jobs(sort=)`). Ties are broken by id in the same direction, so
    every order is total and a keyset cursor (`JobKey`) names one place in it. `finished_at` puts unfinished jobs
    (no finish time) last in both directions."""

    CREATED_DESC = "-created"
    CREATED = "created"
    RUN_AT = "run_at"
    RUN_AT_DESC = "-run_at"
    FINISHED_AT = "finished_at"
    FINISHED_AT_DESC = "-finished_at"
    ATTEMPTS = "attempts"
    ATTEMPTS_DESC = "-attempts"

    @property
    def field(self) -> str:
        return self.value.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


SortValue = datetime | int | None


def sort_value(job: Job, sort: JobSort) -> SortValue:
    """The job's value of the sort's field (None only for `finished_at` of an unfinished job)."""
    value: SortValue = getattr(job, sort.field)
    return value


@dataclass(frozen=True, slots=True)
class JobKey:
    """A keyset position in a job list: the order, and the sort value and id of the last job listed before it.

    Why keysets and not offsets: between two pages jobs are consumed and added; an offset then points at another
    job than the one the page ended at (GS2 Run consumed job 1, so "offset 2" skipped job 3). A key names the place
    itself, so the next page starts right after the last job shown, whatever moved meanwhile, and an index seeks
    to it: page 1000 costs what page 1 costs. Clients see it only as an opaque cursor (`encode_cursor`)."""

    sort: JobSort
    value: SortValue
    id: str

    @classmethod
    def of(cls, job: Job, sort: JobSort) -> JobKey:
        return cls(sort, sort_value(job, sort), job.id)

    def precedes(self, job: Job) -> bool:
        """Whether `job` comes after this key in its order (so it belongs on the page that starts here)."""
        return sort_key_before((self.value, self.id), (sort_value(job, self.sort), job.id), self.sort.descending)


def sort_key_before(a: tuple[SortValue, str], b: tuple[SortValue, str], descending: bool) -> bool:
    """Whether (value, id) `a` is listed before `b`: by value (None last either way), then by id, both in the
    sort's direction. The one definition of the order the stores' queries implement."""
    (va, ia), (vb, ib) = a, b
    if va != vb:
        if va is None:
            return False
        if vb is None:
            return True
        return bool(va > vb) if descending else bool(va < vb)  # type: ignore[operator]
    return ia > ib if descending else ia < ib


def job_sort_key(job: Job, sort: JobSort) -> tuple[int, Any, str]:
    """A `sorted(key=...)` for `sort` in ascending form (reverse=True gives the descending order, except the
    None-last rule, which this key keeps in both directions by its first element)."""
    value = sort_value(job, sort)
    if value is None:
        return (0 if sort.descending else 1, 0, job.id)
    return (1 if sort.descending else 0, value, job.id)


CURSOR_VERSION = 1
_CURSOR_KINDS = {"created": "t", "run_at": "t", "finished_at": "t", "attempts": "i"}


def encode_cursor(key: JobKey) -> str:
    """The opaque text a client passes back to get the next page: base64url of the keyset (times in integer
    microseconds, as every store keeps them). Opaque so clients never compute one (or an offset) themselves."""
    value: int | None
    value = to_microseconds(key.value) if isinstance(key.value, datetime) else key.value
    raw = json.dumps([CURSOR_VERSION, key.sort.value, value, key.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, sort: JobSort = None, *, field: str = "cursor") -> JobKey:  # type: ignore[assignment]
    """Parse and validate a cursor from `encode_cursor`. Anything else (tampered, truncated, from another sort
    order than `sort` when given) raises ValidationError naming `field`, so the API answers 400, never a 500 or a
    silently wrong page."""
    bad = ValidationError(
        f"{field} is not a cursor this server gave out: pass back the next-page cursor of the previous answer "
        "unchanged, or leave it out for the first page",
        field=field,
    )
    if not isinstance(text, str) or not 1 <= len(text) <= 2048:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, order, value, job_id = json.loads(raw)
        parsed = JobSort(order)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if version != CURSOR_VERSION or not isinstance(job_id, str) or not 1 <= len(job_id) <= 1024:
        raise bad
    if _BAD_TEXT_RE.search(job_id):
        raise bad
    kind = _CURSOR_KINDS[parsed.field]
    if value is None:
        if parsed.field != "finished_at":
            raise bad
        return JobKey(parsed, None, job_id)
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**62) <= value <= 2**62:
        raise bad
    if sort is not None and parsed is not JobSort(sort):
        raise ValidationError(
            f"{field} was made for sort={parsed.value}, not sort={JobSort(sort).value}: a cursor continues the "
            "order it came from; start again without it to change the order",
            field=field,
        )
    if kind == "t":
        try:
            return JobKey(parsed, from_microseconds(value), job_id)
        except (OverflowError, ValueError, OSError):
            raise bad from None
    return JobKey(parsed, value, job_id)


def encode_name_cursor(name: str) -> str:
    """The cursor of a list by name (namespaces): the last name listed, opaque like `encode_cursor`."""
    raw = json.dumps([CURSOR_VERSION, "name", name], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_name_cursor(text: str, *, field: str = "cursor") -> str:
    """The name `encode_name_cursor` put in; anything else raises ValidationError naming `field`."""
    bad = ValidationError(
        f"{field} is not a cursor this server gave out: pass back the previous answer's next-page cursor unchanged",
        field=field,
    )
    if not isinstance(text, str) or not 1 <= len(text) <= 2048:
        raise bad
    try:
        version, kind, name = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if version != CURSOR_VERSION or kind != "name" or not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise bad
    return name


def to_microseconds(t: datetime) -> int:
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_microseconds(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX_RE = re.compile(r"[0-9a-f]+")


def id_fragment(text: str, *, field: str = "id") -> str:
    """A search by id: a whole id (returned as given), or 4+ hexadecimal digits (dashes ignored, any case) that
    begin or end a job's id — returned lower-case without dashes. The UI shows ids by their last characters."""
    compact = text.replace("-", "").lower()
    if len(compact) >= 4 and len(compact) <= 32 and _HEX_RE.fullmatch(compact):
        return compact
    raise ValidationError(
        f"{field} must be a job id, or at least 4 hexadecimal characters that begin or end one, got {text!r}",
        field=field,
    )


def dashed_prefix(fragment: str) -> str:
    """The hex `fragment` as the beginning of a dashed UUID (8-4-4-4-12), for an index range on the id."""
    return _dashed(fragment, 0)


def dashed_suffix(fragment: str) -> str:
    """The hex `fragment` as the end of a dashed UUID."""
    return _dashed(fragment, 32 - len(fragment))


def _dashed(fragment: str, start: int) -> str:
    out = []
    for i, ch in enumerate(fragment, start):
        if i in (8, 12, 16, 20) and i != start:
            out.append("-")
        out.append(ch)
    return "".join(out)


def prefix_upper_bound(prefix: str) -> str:
    """The smallest text above every text that starts with `prefix` (its last character + 1): `id >= prefix AND
    id < bound` is an index range."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def parse_json_path(path: str, *, field: str = "path") -> list[str | int]:
    """`$.user.id`, `user.id`, `items[0].sku` → the keys and indexes to walk. Refuses anything else with a message
    that shows the accepted form."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    text = text.lstrip(".")
    steps: list[str | int] = []
    for match in _PATH_STEP_RE.finditer(text):
        name, index = match.group(1), match.group(2)
        steps.append(int(index) if index is not None else name)
    rebuilt = "".join(m.group(0) for m in _PATH_STEP_RE.finditer(text))
    if not steps or rebuilt != text or len(steps) > 32:
        raise ValidationError(
            f"{field} must be a JSON path of dotted keys and [n] indexes such as $.user.id or items[0].sku, "
            f"got {path!r}",
            field=field,
        )
    return steps


_PATH_STEP_RE = re.compile(r"\.?([A-Za-z0-9_\-]+)|\[(\d{1,6})\]")


def path_values(value: str) -> list[JSON]:
    """What a path search's `value` matches: the JSON it parses as (42, true, "x", {...}) and the text itself."""
    found: list[JSON] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return found
    if parsed != value:
        found.insert(0, parsed)
    return found


def walk_json_path(doc: JSON, steps: Sequence[str | int]) -> tuple[bool, JSON]:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(doc, list) or step >= len(doc):
                return False, None
            doc = doc[step]
        else:
            if not isinstance(doc, dict) or step not in doc:
                return False, None
            doc = doc[step]
    return True, doc


def json_equal(a: JSON, b: JSON) -> bool:
    """JSON equality (True is not 1, 1 is 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Filter for listing jobs. None means "any".

    Beyond the exact fields: `scheduled` (pending, due later, never tried), `retrying` (pending after at least one
    try), `id_fragment` (see `id_fragment()`: a whole id, or hex digits that begin or end it), `q` (text in the
    JSON payload, case-insensitive), `path` + `value` (the payload's value at a JSON path equals `value` as JSON or
    as text), `queue_contains` / `task_contains` (case-insensitive substrings)."""

    namespace: str | None = None
    queue: str | None = None
    task: str | None = None
    status: JobStatus | None = None
    user_id: str | None = None
    ids: Sequence[str] | None = None
    scheduled: bool | None = None
    retrying: bool | None = None
    id_fragment: str | None = None
    q: str | None = None
    path: Sequence[str | int] | None = None
    value: str | None = None
    queue_contains: str | None = None
    task_contains: str | None = None

    @property
    def searches(self) -> bool:
        """Whether a search filter (beyond the exact fields) is set: stores without indexes for them scan."""
        return any(
            v is not None
            for v in (
                self.scheduled,
                self.retrying,
                self.id_fragment,
                self.q,
                self.path,
                self.queue_contains,
                self.task_contains,
            )
        )

    def matches(self, job: Job, now: datetime) -> bool:
        """The filter in Python: the memory store's, and what every store's query must agree with."""
        if (
            (self.namespace is not None and job.namespace != self.namespace)
            or (self.queue is not None and job.queue != self.queue)
            or (self.task is not None and job.task != self.task)
            or (self.status is not None and job.status != self.status)
            or (self.user_id is not None and job.user_id != self.user_id)
            or (self.ids is not None and job.id not in self.ids)
        ):
            return False
        if self.scheduled is not None:
            is_scheduled = job.status is JobStatus.PENDING and job.run_at > now and job.attempts == 0
            if is_scheduled != self.scheduled:
                return False
        if self.retrying is not None and (job.status is JobStatus.PENDING and job.attempts > 0) != self.retrying:
            return False
        if self.id_fragment is not None and not id_matches(job.id, self.id_fragment):
            return False
        if self.queue_contains is not None and self.queue_contains.lower() not in job.queue.lower():
            return False
        if self.task_contains is not None and self.task_contains.lower() not in job.task.lower():
            return False
        if self.q is not None:
            text = job.payload_json if job.payload_json is not None else dumps_compact(job.payload)
            if self.q.lower() not in text.lower():
                return False
        if self.path is not None:
            found, at = walk_json_path(job.payload, self.path)
            if not found or not any(json_equal(at, v) for v in path_values(self.value or "")):
                return False
        return True


def id_matches(job_id: str, fragment: str) -> bool:
    compact = job_id.replace("-", "").lower()
    return compact.startswith(fragment) or compact.endswith(fragment)


def dumps_compact(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list. `next` is the key to pass as `after` for the following page (None on the last page)."""

    items: Sequence[T]
    total: int
    limit: int
    offset: int
    next: JobKey | None = None


# ---- cron schedules kept in the store (issue 13 item 5) -------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def occurrence_us(at: datetime) -> int:
    """An occurrence's instant as integer microseconds since the Unix epoch (the key of its run record)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A cron schedule made at runtime, as every store keeps it: one JSON document per name (`to_doc`), so a store
    holds (name, document) and never needs a migration when a setting is added. `options` are the enqueue
    options of its jobs (namespace, queue, priority, max_attempts, user_id, group_key, unique_key);
    `backfill_window` is in seconds."""

    name: str
    spec: str
    task: str
    payload: JSON = None
    timezone: str = "UTC"
    options: dict[str, Any] = field(default_factory=dict)
    backfill: str = "none"
    backfill_window: float = 86400.0
    enabled: bool = True
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def to_doc(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "spec": self.spec,
                "task": self.task,
                "payload": self.payload,
                "timezone": self.timezone,
                "options": self.options,
                "backfill": self.backfill,
                "backfill_window": self.backfill_window,
                "enabled": self.enabled,
                "created_at": _iso(self.created_at),
                "updated_at": _iso(self.updated_at),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_doc(cls, doc: str | bytes | Mapping[str, Any]) -> ScheduleRecord:
        d: Mapping[str, Any] = doc if isinstance(doc, Mapping) else json.loads(doc)
        return cls(
            name=str(d["name"]),
            spec=str(d["spec"]),
            task=str(d["task"]),
            payload=d.get("payload"),
            timezone=str(d.get("timezone") or "UTC"),
            options=dict(d.get("options") or {}),
            backfill=str(d.get("backfill") or "none"),
            backfill_window=float(d.get("backfill_window", 86400.0)),
            enabled=bool(d.get("enabled", True)),
            created_at=datetime.fromisoformat(d["created_at"]),
            updated_at=datetime.fromisoformat(d["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One occurrence of a schedule that a scheduler handled (or a manual trigger): the job it created (`job_id`;
    None when the occurrence was skipped, with the reason in `note`). Stores key runs by (schedule, occurrence) and
    keep the first record of an occurrence (`Store.record_schedule_run`)."""

    schedule: str
    occurrence: datetime
    job_id: str | None = None
    manual: bool = False
    note: str | None = None
    recorded_at: datetime = field(default_factory=utcnow)

    def to_doc(self) -> str:
        return json.dumps(
            {
                "schedule": self.schedule,
                "occurrence": _iso(self.occurrence),
                "job_id": self.job_id,
                "manual": self.manual,
                "note": self.note,
                "recorded_at": _iso(self.recorded_at),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_doc(cls, doc: str | bytes) -> ScheduleRun:
        d = json.loads(doc)
        return cls(
            schedule=str(d["schedule"]),
            occurrence=datetime.fromisoformat(d["occurrence"]),
            job_id=d.get("job_id"),
            manual=bool(d.get("manual", False)),
            note=d.get("note"),
            recorded_at=datetime.fromisoformat(d["recorded_at"]),
        )


SCHEDULE_RUNS_KEPT = 200
"""Run records kept per schedule (the newest by occurrence); older ones are trimmed as new ones are recorded."""
