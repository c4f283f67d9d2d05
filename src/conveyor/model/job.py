"""Jobs, attempts, leases and the values that cross `Store.enqueue`/`Store.finish`: the job's life as data,
with the rules that make a new job unique (issue 13 item 3)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypedDict

from conveyor.errors import ValidationError
from conveyor.ids import new_job_id
from conveyor.model.base import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_PAYLOAD_BYTES, EPOCH, JSON, MAX_ATTEMPTS_RANGE, utcnow
from conveyor.model.text import RawJSON, check_text, encode_payload, validate_name, validate_task_name

DEFAULT_NAMESPACE = "default"
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
MIN_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest `run_at` a job may have: every store keeps times as Unix-epoch numbers somewhere (Redis scores,
GS2's milliseconds), and a time before 1970 is a typo, not a schedule."""
MAX_DELAY_SECONDS = 10 * 366 * 86_400.0
"""Ten years: the furthest a job may be scheduled (`delay`, `run_at`); anything later is a mistake, not a plan."""


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
        created_us = (job.created - EPOCH) // timedelta(microseconds=1)
        return f"{digest}/{self.period_us}/{created_us // self.period_us}"


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
