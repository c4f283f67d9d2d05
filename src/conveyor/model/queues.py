"""Namespaces, queues and their limits (caps, rate limits as GCRA arithmetic), workers, leadership and stats."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from conveyor.errors import ValidationError
from conveyor.model.base import DEFAULT_MAX_ATTEMPTS, JSON, MAX_ATTEMPTS_RANGE, utcnow
from conveyor.model.job import DEFAULT_NAMESPACE
from conveyor.model.text import check_json_text, check_text, validate_name

MAX_INT_PARAMETER = 2**31 - 1
"""The largest offset, count or try number any surface accepts (SQLite and PostgreSQL integers hold it)."""


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
