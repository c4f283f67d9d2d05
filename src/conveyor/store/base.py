"""The store interface: the one contract every backend (memory, SQLite, PostgreSQL, Redis) implements.

In the spirit of River's driver and Oban's engine: the store owns persistence and the atomicity of every state
change; the worker owns policy (backoff, timeouts, outcome classification) and hands the store finished decisions.
Every method is async; the sync Python API runs them on a private event loop.

Rules every implementation must honour (the conformance suite, `conveyor.conformance`, checks each one; a store
written outside this repository runs it with `pytest --pyargs conveyor.conformance`, docs/own-store.md):

* **Atomic transitions.** Each method that changes state does so atomically: a crash between two statements
  never leaves a job half-moved (one SQL transaction, one Lua script).
* **Claim order.** Due jobs (`status='pending' AND run_at <= now`) are claimed in order of
  (priority ASC, run_at ASC, id ASC), across the given queues and namespaces, at most `limit` per call.
  Claiming sets status `processing`, `attempts += 1`, `try_number += 1`, a fresh random `lease_token`,
  `started_at = now`, `worker_id`, `lease_expires_at = now + lease`, `updated = now`, and clears
  `cancel_requested`.
* **Served tasks.** A claim given `tasks` takes only jobs of those tasks (a worker passes the tasks it registered):
  a job of a task that no claimer serves stays pending and burns no attempt. Skipping it changes nothing else —
  claim order, lanes, pauses and caps are those of the served jobs alone. Stores keep this bounded: a backlog of
  unserved jobs in front of served ones must not make a claim walk that backlog (per-task ready sets / indexes).
* **Namespace settings.** Background claims (`claim` and hand-off) take no job of a namespace whose stored
  settings have `auto_run` off, decided inside the claim's own atomic step from the settings as they are then — a
  namespace switched off (or created off) before a job is enqueued into it never has that job claimed. A namespace
  without a stored record has the default settings (auto_run on). GS2 Run (`claim_user`) ignores auto_run.
* **Serial lanes.** Jobs with a serial key (group key, else user id; `Job.serial_key`), scoped by namespace,
  run one at a time in strict FIFO order: a lane's head is its pending job with the lowest (priority, id); only the
  head may be claimed, only when it is due, and only while no job of the lane is processing. So a delayed or
  backing-off head holds back the rest of its lane (GS2's FIFO guarantee), and so does a head whose task the claim
  does not serve (the lane is skipped, never overtaken). At most one job per lane per claim.
* **Paused queues** (QueueSettings.paused) are not claimed from by `claim` (Run via `claim_user` ignores pauses).
  A queue's `concurrency` limit, when set, caps its processing jobs across all workers.
* **Rate limits** (QueueSettings.rate_limit, a `RateLimit`): `claim` (hand-off included) starts at most what the
  queue's GCRA allows (`model.rate_allowance`), and advances the queue's stored theoretical arrival time by the
  jobs it started (`model.rate_advance`), in the claim's own atomic step, so the limit holds across every worker
  and process. Jobs over the limit stay pending and burn no attempt; `next_due` reports the time of the next
  allowed claim, so workers sleep until then. `claim_user` (Run) ignores rate limits as it ignores pauses. The
  arrival time is kept by every settings write (changing the limit does not reset the bucket).
  With `QueueSettings.rate_key` the limit holds per key instead (`model.rate_key_value`: a job column or a
  top-level payload field; jobs without a value share the bucket `""`): one GCRA state per (namespace, queue, key),
  the claim passes over the jobs of keys without a token to the jobs behind them, and `next_due` ignores them up
  to their key's next token. A key's state is dropped once its bucket is full again (its arrival time passed), so
  the stored state is bounded by the keys claimed within one burst's time; `rate_state` reports it.
* **Concurrency per key** (Job.concurrency_key, QueueSettings.key_concurrency): `claim` (hand-off included) never
  leaves more than `key_concurrency` jobs of one (namespace, queue, concurrency key) processing, counted inside its
  own atomic step; it passes over the jobs of keys at their limit to the jobs behind them (a blocked key's backlog
  must not starve other keys), and `next_due` does not count them. No key or no limit: nothing changes.
  `claim_user` ignores it, as it ignores caps.
* **Queue settings are changed, not replaced**, by `update_queue_settings`: one atomic read-change-write per call,
  so a pause never erases a cap or a rate limit set meanwhile, and two concurrent changes of different settings
  both land.
* **Fencing.** `finish` and `heartbeat` act only when the job is `processing` under the lease's token (`Lease`,
  `Job.lease_token`); otherwise they change nothing and report it, and a heartbeat then reports no cancel request
  either (a stale worker cannot finish, fail, cancel or extend a claim that has since been given to someone else).
  The token is random and written by each claim, so it never repeats for a job even when a crash of the store loses
  the claim that recorded it (the try number can repeat; it is not a fencing token). A refused report's attempt is
  kept as a LOST record of its own claim (`model.not_applied`; nothing is written for a job that no longer exists,
  and a claim's existing non-LOST record is never replaced), so every run is in the history and none is merged
  into another claim's record.
* **Attempt records** are keyed by (job_id, lease_token), one per claim, and listed by `model.attempt_order`: by
  try number, and within one try number lost records first, so the last record of a number is the one that counted
  (what GS2's result-by-try-number returns).
* **Unique keys.** Enqueuing a job whose (namespace, unique_key) matches an *active* job (pending or
  processing) stores nothing and returns that existing job with `duplicate=True`. Within one enqueue batch the
  first of equal keys wins.
* **Unique jobs** (`unique=`, docs/unique.md). A NewJob may carry `unique_hash`, `unique_states` (status bits,
  model.UNIQUE_STATE_BITS) and `unique_replace`. A stored job *holds* its hash while its status is among its own
  states. Enqueuing a job whose (namespace, unique_hash) is held stores nothing and returns the holder with
  `duplicate=True`, after writing the new job's payload and/or run_at on it when `unique_replace` asks and the
  holder is pending. Check and insert are atomic (ten concurrent enqueues store one job); within a batch the first of
  equal hashes wins. `requeue` drops the job's rule; `restore_jobs` stores none.
* **Rescue.** `rescue` finds processing jobs whose lease expired, records a LOST attempt (status code 0, the
  job's worker_id and started_at, error "lease expired: worker … stopped heartbeating"), and moves each to
  `pending` when attempts < max_attempts, else to `failed` (last_error set). A rescued job keeps its `run_at`, and
  so its place in the claim order: it runs again as soon as a claim reaches it, not behind the whole backlog that
  arrived while it ran. The same holds for a graceful hand-back (`Finish(release=True)` without run_at).
  `next_lease_expiry` says, by the store's clock, when the earliest lease of a processing job runs out, so the
  rescuer can act then rather than poll.
* **Wake-ups.** After a successful enqueue the store wakes waiters in this process at once (`wait_for_jobs`)
  and, where the backend can, in other processes (NOTIFY, Redis lists/pub-sub); otherwise waiters poll. Jobs
  stored for later (a future `run_at`) wake waiters too, hand-off or not: a woken worker asks `next_due` again,
  which is how an idle worker in another process learns when to claim them.
* **Next due time.** `next_due` answers, by the store's clock, how long until the earliest pending job that
  `claim` with the same arguments could take once due (the same rules: scope, pauses, caps, lane heads), with an
  index-friendly query. Workers keep a timer to it, so a scheduled job or a retry starts on time, not at a poll.
* **Leader election.** `elect` gives a named role to one candidate at a time under a lease measured by the
  store's clock; the holder renews it with the same call, and `term` grows whenever it changes hands. Only one
  candidate holds a role while its lease runs, whatever the races. A holder that cannot renew must stop acting as
  leader before `expires_in` (as measured from when it *sent* its last successful renewal) has passed.
* **Timed out, still running.** `mark_timed_out` (fenced like `heartbeat`) records that the current try passed its
  timeout while its handler keeps running (`Job.timed_out_at`); nothing else changes: the job stays processing
  under the same lease until the worker reports it.
* **Hand-off** (optional, `supports_handoff`). A worker waiting for jobs may `offer_idle` an `IdleClaim`; an
  enqueue in the same process and on the same event loop may then claim for it in the same atomic step, with the
  same claim rules and arguments as `claim` (served tasks, namespace settings, lanes, pauses, caps), and hand it the
  jobs through `IdleClaim.deliver`. One offer is taken
  by at most one enqueue, and `deliver` is then called once, possibly with no jobs (the worker offers again).
  When `deliver` answers False (the worker is stopping) the store releases those jobs back to pending without
  counting an attempt. Stores without it ignore offers; their waiters wake and claim.
* **Unavailability.** When the backend cannot be reached a method raises `StoreUnavailable` (never a driver
  exception), and the store reconnects by itself on a later call.
* **Namespace writes never lose one another.** `create_namespace` stores a namespace only if none of that name
  exists, in one atomic step (`NamespaceExists` otherwise; `default` always exists), so of two concurrent creates
  exactly one wins and its settings are the ones stored. `put_namespace(ns, expected_revision=r)` is a
  compare-and-set on `Namespace.revision`: it writes only while the stored revision is still `r` (a `default` never
  written has revision 0) and raises `RevisionConflict` otherwise; `update_namespace` builds read → change →
  compare-and-set → retry on it, so two concurrent updates of different settings both land.
* **One idempotency primitive.** `kv_setdefault` puts a value only when no live one exists and answers the value in
  place and whether this call put it, in one atomic step: replay-once protocols reserve and read in one call, with
  no window between the two in which the reservation can expire or be taken.
* **Migrations.** `migrate()` behaves the same on every store: it may be called on a store that is not open (it
  opens only what it needs and releases it again), returns the labels of the steps *this call* applied in order
  (`known_migrations()` on an empty store, `[]` when up to date, also right after `open()`), applies each step
  exactly once however many processes start at once, and refuses a store migrated by a newer Conveyor (a step it
  does not know) with `SchemaTooNew`, changing nothing; `open()` refuses it too.
* **Isolated spaces.** `Store.isolated_url(base, label, workdir)` names a separate, empty space beside the base
  URL's (a PostgreSQL schema, a Redis key prefix, a SQLite file in `workdir`, a named memory data set) and
  `drop()` deletes everything stored under the store's URL. `drop` refuses the default space (label `conveyor`:
  schema / prefix `conveyor`, `conveyor.db`) unless `allow_default=True`, so a wrong URL cannot wipe production
  data. Benchmarks and the conformance suite run on such spaces.
* **Options are read strictly.** A store is built as `StoreClass(url, *, lazy=False, **options)`; its options come
  from the URL's query and the keyword arguments (which win). An option the store does not know (nor passes to its
  driver, which knows it), a value it cannot read, or an option given twice is refused when the store is built with
  a ValidationError naming the option and listing the valid ones (`conveyor.store.urls.take_options`): a misspelt
  durability setting must never be silently ignored.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conveyor.errors import NamespaceNotFound, RevisionConflict, Unsupported, ValidationError
from conveyor.model import (
    SCHEDULE_RUNS_KEPT,
    Attempt,
    Finish,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Leadership,
    Lease,
    LeaseState,
    Namespace,
    NewJob,
    Page,
    QueueChange,
    QueueInfo,
    QueueSettings,
    RateState,
    ScheduleRecord,
    ScheduleRun,
    Stats,
    WorkerInfo,
    dashed_prefix,
    dashed_suffix,
    dumps_compact,
    path_values,
    prefix_upper_bound,
)
from conveyor.store.feed import EventFeed

DEFAULT_SPACE = "conveyor"
"""The label of every store's default space (schema `conveyor`, prefix `conveyor`, `conveyor.db`): what a URL
without `schema=`/`prefix=` uses, so `drop()` refuses it unless told otherwise."""

_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
UPDATE_ATTEMPTS = 50
"""How often `update_namespace` re-reads and re-applies a change that lost a compare-and-set race before it gives up
(each retry means another writer succeeded, so this is reached only under a storm of writes to one namespace)."""


def check_label(label: str) -> str:
    """An isolated space's label must be a plain identifier: it becomes a PostgreSQL schema, a Redis key prefix, a
    file name."""
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise ValidationError(
            f"an isolated space's label must be 1-63 letters, digits or '_' (not starting with a digit), got {label!r}",
            field="label",
        )
    return label


def stats_from_counts(counts: Mapping[str, int], scheduled: int) -> Stats:
    """The Stats of a store that counted jobs by status value (`"pending"`, …; a status it did not see counts 0)."""
    return Stats(
        pending=counts.get("pending", 0),
        processing=counts.get("processing", 0),
        completed=counts.get("completed", 0),
        failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0),
        scheduled=scheduled,
    )


def check_after(after: JobKey | None, sort: JobSort) -> None:
    """`list_jobs`'s rule: a key continues the order it was made in."""
    if after is not None and after.sort is not JobSort(sort):
        raise ValidationError(
            f"a page key made for sort={after.sort.value} cannot continue sort={JobSort(sort).value}", field="cursor"
        )


def like_contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards (`%`, `_`) and the escape (`\\`) taken literally (both
    SQLite, with `ESCAPE '\\'`, and PostgreSQL, whose default escape is the backslash)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def filter_conditions(flt: JobFilter, fragments: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The SQL stores' WHERE: the condition of each filter `flt` sets (from the store's `fragments`, keyed by
    filter name) and the parameters they use. `ids` is given as a list (SQLite encodes it)."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    for name in ("namespace", "queue", "task", "user_id"):
        value = getattr(flt, name)
        if value is not None:
            conditions.append(fragments[name])
            params[name] = value
    if flt.status is not None:
        conditions.append(fragments["status"])
        params["status"] = JobStatus(flt.status).value
    if flt.ids is not None:
        conditions.append(fragments["ids"])
        params["ids"] = list(flt.ids)
    for name in ("scheduled", "retrying"):
        wanted = getattr(flt, name)
        if wanted is not None:
            conditions.append(fragments[name] if wanted else f"NOT {fragments[name]}")
    if flt.id_fragment is not None:
        conditions.append(fragments["id_fragment"])
        lo = dashed_prefix(flt.id_fragment)
        params.update(id_lo=lo, id_hi=prefix_upper_bound(lo), id_suffix="%" + dashed_suffix(flt.id_fragment))
    for name in ("q", "queue_contains", "task_contains"):
        value = getattr(flt, name)
        if value is not None:
            conditions.append(fragments[name])
            params[name] = like_contains(value)
    if flt.path is not None:
        conditions.append(fragments["path"])
        params["path"] = [str(step) for step in flt.path]
        params["path_values"] = [dumps_compact(v) for v in path_values(flt.value or "")]
    return conditions, params


def check_restore(jobs: Sequence[Job], attempts: Sequence[Attempt]) -> list[Job]:
    """`restore_jobs`'s rules every store checks before touching anything: the jobs, lease fields cleared."""
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValidationError("restore_jobs got the same job id twice", field="id")
    for job in jobs:
        if job.status is JobStatus.PROCESSING:
            raise ValidationError(
                f"job {job.id} is processing: no worker holds that claim any more; restore it as pending",
                field="status",
            )
    known = set(ids)
    for a in attempts:
        if a.job_id not in known:
            raise ValidationError(
                f"an attempt of job {a.job_id}, which is not among the jobs restored", field="attempts"
            )
    return [
        replace(
            j,
            lease_expires_at=None,
            worker_id=None,
            lease_token=None,
            cancel_requested=False,
            timed_out_at=None,
            duplicate=False,
        )
        for j in jobs
    ]


def refuse_default(what: str, name: str, allow_default: bool) -> None:
    """`drop()`'s guard: the default space is production data unless the caller says otherwise."""
    if name == DEFAULT_SPACE and not allow_default:
        raise ValidationError(
            f"refusing to drop {what} {name!r}: it is the default space, where production jobs live. Drop an "
            "isolated space (Store.isolated_url) instead, or pass allow_default=True if you really mean it",
            field="url",
        )


class HandlerTransaction(abc.ABC):
    """A transaction a transactional handler writes through; the job's completion commits inside it."""

    connection: Any

    @abc.abstractmethod
    async def finish(self, finish: Finish) -> bool:
        """Apply the completion inside this transaction (fenced like Store.finish) and commit. False if stale."""


@dataclass(eq=False)
class IdleClaim:
    """A worker of this process that waits for jobs, and what it would claim: `claim`'s arguments.

    Why: a job enqueued while a worker idles otherwise costs two round trips before it starts (the enqueue, then
    the woken worker's claim). A store that supports hand-off claims inside the enqueue instead and passes the
    jobs to `deliver`, which the worker answers True (taken: it runs or buffers them) or False (stopping: the
    store hands them back). `deliver` is called on `loop`, the worker's loop, and only there."""

    worker_id: str
    queues: Sequence[str]
    limit: int
    lease: timedelta
    namespaces: Sequence[str] | None
    exclude_namespaces: Sequence[str]
    deliver: Callable[[list[Job]], bool]
    loop: asyncio.AbstractEventLoop
    tasks: Sequence[str] | None = None


class Store(abc.ABC):
    """A job store. Create with `conveyor.store.open_store(url)`, then `await store.open()`."""

    #: URL scheme(s) this store serves, e.g. "sqlite".
    scheme: str = ""
    #: Whether `enqueue_on_connection`/transactional handlers work on this store.
    supports_transactions: bool = False
    #: Whether an enqueue can claim for an idle worker of this process (`offer_idle`; see the module doc).
    supports_handoff: bool = False
    #: Whether other processes can open the same URL and share the jobs (False for the in-memory store).
    supports_processes: bool = True

    # ---- lifecycle ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and run pending migrations (safe when several processes start at once). Idempotent.

        Must not raise when the backend is down if `lazy=True` was passed to the constructor; then it warns and
        methods raise StoreUnavailable until the backend is back."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and wake every waiter. Idempotent."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending schema migrations; return the labels of those this call applied, in order (empty when up
        to date). Callable on a store that is not open: it opens what it needs and releases it. Raises SchemaTooNew
        when the store was migrated by a newer Conveyor (see the module doc)."""

    def known_migrations(self) -> list[str]:
        """Every migration this code knows, in order: what `migrate()` applies to an empty store."""
        return []

    @classmethod
    def isolated_url(cls, base_url: str, label: str, workdir: Path) -> str:
        """A URL naming a separate, empty space of this store beside `base_url`'s (same server and options), named
        by `label` (see check_label); `workdir` is a directory the space may keep files in (SQLite). Opening it
        creates the space; `drop()` deletes it."""
        raise Unsupported(f"{cls.__name__} cannot make isolated spaces")

    async def drop(self, *, allow_default: bool = False) -> None:
        """Close this store and delete everything stored under its URL (schema, key prefix, file). Idempotent.
        Refuses the default space (DEFAULT_SPACE) unless `allow_default`. Other store objects on the same URL must
        be closed first."""
        raise Unsupported(f"{type(self).__name__} cannot drop its space")

    async def ping(self) -> None:
        """Raise StoreUnavailable if the backend cannot be reached now."""
        await self.stats()

    # ---- enqueue --------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Store jobs in one round trip / transaction; all or nothing. Returns one Job per input, in order
        (an existing active job with `duplicate=True` where a unique key matched)."""

    def enqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        """Insert jobs through the caller's own (sync) connection, inside the caller's open transaction: the jobs
        exist if and only if the caller commits. No wake-up is sent until the caller commits (waiters poll, or
        the backend's transactional notify fires on commit).

        The caller's connection is the caller's: every problem with it raises CallerConnectionError (never
        StoreUnavailable, whose "Conveyor reconnects by itself" would be false): closed or broken, in a failed
        transaction, or — unless `require_transaction=False` — not inside a transaction (autocommit mode, where the
        jobs would commit at once whatever the caller does next, or idle, where nobody may ever commit them)."""
        raise Unsupported(f"{type(self).__name__} does not support enqueue on a caller's connection")

    async def aenqueue_on_connection(
        self, connection: Any, jobs: Sequence[NewJob], *, require_transaction: bool = True
    ) -> list[Job]:
        """Async twin of enqueue_on_connection, for async driver connections (psycopg AsyncConnection)."""
        raise Unsupported(f"{type(self).__name__} does not support enqueue on a caller's connection")

    # ---- events across processes ----------------------------------------------------------------------------
    # The core's events (push, run, cancel: conveyor.relay) reach the event buses of every process on this store's
    # space through these: messages are opaque texts of at most EVENT_MESSAGE_MAX_BYTES (store/feed.py).

    async def publish_events(self, messages: Sequence[str]) -> None:
        """Send each message to every feed of `subscribe_events` open on this store's space, in every process
        (this one included), in order. At most once: a feed whose connection is down meanwhile misses them.
        Raises StoreUnavailable when the store cannot be reached."""
        raise Unsupported(f"{type(self).__name__} does not carry events between processes")

    async def subscribe_events(self) -> EventFeed:
        """Open a feed of the messages published on this space. Returns once subscribed: every message published
        after it returns is delivered to it (unless its connection drops; it reconnects by itself). Close it with
        `aclose()`. Raises StoreUnavailable when the store cannot be reached now."""
        raise Unsupported(f"{type(self).__name__} does not carry events between processes")

    def publish_events_on_connection(self, connection: Any, messages: Sequence[str]) -> None:
        """Publish through the caller's own (sync) connection, inside its transaction (after
        `enqueue_on_connection`): the messages go out if and only if the caller commits, and only then. A store
        without a transactional way to do it raises Unsupported (the caller's events are then not published)."""
        raise Unsupported(f"{type(self).__name__} cannot publish events on a caller's connection")

    async def apublish_events_on_connection(self, connection: Any, messages: Sequence[str]) -> None:
        """Async twin of publish_events_on_connection (async driver connections)."""
        raise Unsupported(f"{type(self).__name__} cannot publish events on a caller's connection")

    # ---- the worker's calls ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease: timedelta,
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> list[Job]:
        """Claim up to `limit` due jobs whose queue is in `queues`, in claim order (see module doc).

        `tasks`: only jobs of these tasks (a worker passes the tasks it registered); None takes any task (tools and
        tests). `namespaces=None` means every namespace except `exclude_namespaces`. Namespaces whose settings
        have auto_run off and queues paused in a namespace (QueueSettings) are skipped by the store itself."""

    @abc.abstractmethod
    async def claim_user(self, namespace: str, user_id: str, worker_id: str, lease: timedelta) -> Job | None:
        """Claim the head of the user's lane (serial key `u:<user_id>`) if it is due — GS2 Run.

        Raises Conflict when a job of that lane is processing. Returns None when the lane has no due head."""

    @abc.abstractmethod
    async def heartbeat(self, leases: Sequence[Lease], lease: timedelta) -> list[LeaseState]:
        """Extend held leases to now + lease; one LeaseState per input, in order (carries cancel_requested).
        A lease whose token is not the job's current one is not held (and reports no cancel request)."""

    @abc.abstractmethod
    async def finish(self, finishes: Sequence[Finish]) -> list[bool]:
        """Apply end-of-try reports in one round trip; True per report that applied, False when stale.

        Applying sets status, `finished_at` (final statuses), clears lease/worker/lease_token, `last_error` = error
        (None on completion), `result` (on completion), `run_at` (retry), and stores `attempt` if given under the
        lease's token. A stale report changes nothing but keeps its attempt as `not_applied` (module doc)."""

    @asynccontextmanager
    async def handler_transaction(self, job: Job) -> AsyncIterator[HandlerTransaction]:
        """A transaction for a transactional handler (PostgreSQL). Rolled back if the block raises."""
        raise Unsupported(f"{type(self).__name__} does not support transactional handlers; use PostgreSQL")
        yield  # pragma: no cover

    def offer_idle(self, claim: IdleClaim) -> None:
        """A worker waits for jobs: a store with hand-off may claim for it in a later enqueue (at most once per
        offer). Stores without hand-off ignore it; the worker is woken through `wait_for_jobs` as usual."""
        return

    def withdraw_idle(self, claim: IdleClaim) -> None:
        """The worker no longer waits (it claims for itself, or stops). An enqueue already under way may still
        deliver to it; the worker answers that delivery itself."""
        return

    @abc.abstractmethod
    async def wait_for_jobs(self, timeout: float) -> None:
        """Return when jobs may have become available (a local or remote enqueue), or after `timeout` seconds.
        Spurious returns are allowed; callers simply claim again."""

    @abc.abstractmethod
    async def next_due(
        self,
        queues: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        namespaces: Sequence[str] | None = None,
        exclude_namespaces: Sequence[str] = (),
    ) -> float | None:
        """Seconds from now, by the store's clock, until the earliest `run_at` among the pending jobs that `claim`
        with the same arguments could take once they are due (≤ 0: one is due already); None when there are none.

        Why the store's clock: the caller arms a timer for this many seconds, so a worker whose clock is off still
        claims when the store considers the job due. Jobs that claim would skip whatever their time (tasks not
        served, namespaces whose auto_run is off, paused queues, queues at their concurrency cap, lane members behind
        their head or behind a processing job) do not count."""

    @abc.abstractmethod
    async def mark_timed_out(self, lease: Lease) -> bool:
        """The try holding `lease` passed its timeout but its handler still runs (a thread that cannot be stopped):
        set `timed_out_at` = now on the job, which stays processing under the same lease. False (and nothing
        changed) when the lease no longer holds (fenced like `heartbeat`)."""

    # ---- maintenance ----------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def rescue(self, now: datetime | None = None, limit: int = 1000) -> list[Job]:
        """Give back jobs whose lease expired, keeping their run_at (see module doc). Returns the jobs after the
        change."""

    @abc.abstractmethod
    async def next_lease_expiry(self) -> float | None:
        """Seconds from now, by the store's clock, until the earliest lease of a processing job expires (≤ 0: one
        has expired, and `rescue` takes it now); None when no job is processing.

        Why: the elected rescuer arms a timer to it, so a killed worker's jobs go back to the queue when their lease
        runs out, not up to a rescue interval later (recovery within 1.5 leases, issue 9). By the store's clock, the
        one `rescue` compares leases with, so a leader whose clock is off still rescues on time."""

    @abc.abstractmethod
    async def prune(
        self, completed_before: datetime, failed_before: datetime, limit: int = 10_000, *, namespace: str | None = None
    ) -> int:
        """Delete completed jobs finished before `completed_before`, and failed/cancelled ones finished before
        `failed_before`, with their attempt records; only in `namespace` when given (each namespace has its own
        retention). Returns how many jobs were deleted."""

    # ---- inspection and management --------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    async def list_jobs(
        self,
        filter: JobFilter,
        limit: int = 20,
        offset: int = 0,
        *,
        after: JobKey | None = None,
        sort: JobSort = JobSort.CREATED_DESC,
    ) -> Page[Job]:
        """Jobs matching the filter in `sort` order (default newest first: created DESC, id DESC; ties always by
        id in the sort's direction), with the total count matching the filter.

        Keyset paging: with `after` (the `next` of the previous page, made for the same sort), the page starts
        right after that key — jobs consumed, moved or added meanwhile never make a later page skip or repeat a
        job that stayed in the filter. The query seeks to the key by index, so a deep page costs what the first
        one does. `offset` (PocketBase's paging) is applied after the key; `Page.next` is the key of the page's last
        job when more follow, else None. `after` made for another sort raises ValidationError."""

    @abc.abstractmethod
    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt record of the job, one per claim, in `model.attempt_order` (by try number)."""

    @abc.abstractmethod
    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats: ...

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> Job:
        """Pending → cancelled (finished_at set). Processing → cancel_requested=True (the worker stops it).
        Raises JobNotFound, or InvalidTransition for completed/failed/cancelled jobs."""

    @abc.abstractmethod
    async def requeue(self, job_id: str) -> Job:
        """Failed or cancelled → pending, attempts=0, run_at=now, last_error/finished_at cleared.
        Raises JobNotFound, or InvalidTransition ("Job cannot be requeued (must be in 'failed' status)")."""

    @abc.abstractmethod
    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        """Delete a pending or failed job (PocketBase rule) with its attempts; any state with force=True
        (GS2 rule). Returns the job as it was. Raises JobNotFound, or InvalidTransition
        ("Job cannot be deleted (must be in 'pending' or 'failed' status)")."""

    @abc.abstractmethod
    async def run_now(self, job_id: str) -> Job:
        """A pending job becomes due now: run_at = now if it was later (a job already due keeps its run_at, and so
        its place in the order). Raises JobNotFound / InvalidTransition otherwise."""

    @abc.abstractmethod
    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        """Whether the user's lane (serial key `u:<user_id>`) has a pending job, due now or scheduled later.
        GS2 Run's `isLastJob` is `not this`: a client that loops "Run until isLastJob" must not stop while a job
        of its queue still waits (a retry, or a job scheduled for later)."""

    @abc.abstractmethod
    async def restore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        """Put jobs back exactly as they were — ids, status, times, attempts and try numbers, errors, results, the
        payload's exact text — with their attempt records, in one atomic step (a user-data import, a move between
        stores). Any status but processing (no worker holds that claim any more: restore it as pending). Pending
        jobs enter the claim order (lanes, unique keys) and wake waiters; finished ones count in stats and are
        pruned by their `finished_at`. Lease fields (worker, lease expiry and token, cancel request, timed out)
        are not restored.

        Refuses the whole call, storing nothing, with ValidationError: an id already taken (field `id`), a pending
        job whose unique key an active job holds (field `unique_key`), a processing job (field `status`), an
        attempt of a job not in `jobs` (field `attempts`). Returns the jobs as stored, in the given order."""

    @abc.abstractmethod
    async def delete_user_data(self, user_id: str) -> int:
        """Delete every job whose `user_id` is this one — any namespace, any status, group lanes included — with
        its attempt records, atomically (GS2 CleanUserDataByUserId: account deletion). Returns how many jobs were
        deleted. A job processing meanwhile is deleted too; its worker's finish and heartbeat find nothing and are
        ignored (fencing). Lanes the jobs leave are left consistent (the next job of a group lane is claimable)."""

    # ---- namespaces ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_namespace(self, namespace: Namespace) -> Namespace:
        """Store a new namespace, atomically, only if none of that name exists (stored as given). Raises
        NamespaceExists otherwise, also for `default`, which always exists. Returns what was stored."""

    @abc.abstractmethod
    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        """Create or replace (revision += 1, updated = now, created kept on replace). Returns what was stored.

        With `expected_revision`, a compare-and-set: write only while the stored revision is that one (a `default`
        never stored has revision 0), else raise RevisionConflict; NamespaceNotFound when the namespace does not
        exist (any more). Then the stored revision is `expected_revision + 1`."""

    async def update_namespace(
        self, name: str, change: Callable[[Namespace], Awaitable[Namespace]], *, attempts: int = UPDATE_ATTEMPTS
    ) -> Namespace:
        """Read the namespace, apply `change` (async, and free of side effects: it may run more than once) and write
        the result back only if nobody changed the namespace meanwhile (compare-and-set on its revision); on a
        race, read and apply again. So concurrent updates of different settings all land. Raises
        NamespaceNotFound (also when it is deleted meanwhile), or RevisionConflict after `attempts` lost races."""
        last: RevisionConflict | None = None
        for _ in range(max(1, attempts)):
            current = await self.get_namespace(name)
            if current is None:
                raise NamespaceNotFound(name)
            wanted = await change(current)
            if wanted.name != name:
                raise ValidationError(
                    f"an update of namespace {name!r} cannot rename it (got {wanted.name!r})", field="name"
                )
            try:
                return await self.put_namespace(wanted, expected_revision=current.revision)
            except RevisionConflict as exc:
                last = exc
        assert last is not None
        raise last

    @abc.abstractmethod
    async def get_namespace(self, name: str) -> Namespace | None:
        """The namespace `default` always exists (returned with default settings if never stored)."""

    @abc.abstractmethod
    async def list_namespaces(self) -> list[Namespace]:
        """All namespaces by name, always including `default`."""

    @abc.abstractmethod
    async def delete_namespace(self, name: str) -> bool:
        """Delete the namespace: its settings record, its queue settings, and every job of it with their attempt
        records, in one transaction / script (GS2's rule: a deleted namespace takes its jobs with it, so none of
        them can run afterwards; a worker still running one has its report refused). True when the namespace had
        a record or jobs. `default` cannot be deleted (ValidationError)."""

    # ---- queues ----------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        """Replace every setting of the queue (its rate limiter's state is kept)."""

    @abc.abstractmethod
    async def update_queue_settings(self, namespace: str, queue: str, change: QueueChange) -> QueueSettings:
        """Apply `change` to the queue's stored settings (defaults when it has none) in one atomic step and return
        the settings stored. Fields the change leaves at KEEP are those stored at that moment, whatever another
        writer did just before."""

    @abc.abstractmethod
    async def get_queue_settings(self, namespace: str, queue: str) -> QueueSettings:
        """The queue's stored settings, or the defaults (not paused, no limits) when it has none."""

    @abc.abstractmethod
    async def rate_state(self, namespace: str, queue: str, limit: int = 10) -> RateState:
        """The queue's rate limiter state by the store's clock: its own bucket, how many keys hold state (`rate_key`
        queues) and the `limit` keys with the latest arrival time (the most limited). Keys whose bucket is full
        again are not counted (they hold no state, or are about to be dropped)."""

    @abc.abstractmethod
    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        """Every (namespace, queue) that has jobs or settings, with counts by status and `scheduled`."""

    # ---- workers ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def register_worker(self, info: WorkerInfo) -> None:
        """Create or refresh a registration (upsert); it expires at info.expires_at unless refreshed. Every field,
        `tasks` included, is stored and returned by `list_workers`."""

    @abc.abstractmethod
    async def unregister_worker(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerInfo]:
        """Live registrations only (expired ones are never returned, and may be deleted on the way)."""

    # ---- leader election -----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        """Take or renew the role `name` for `candidate` for `ttl` seconds of the store's clock, atomically.

        Vacant or lapsed → `candidate` takes it (term + 1); held by `candidate` → renewed (same term); held by
        another candidate whose lease runs → unchanged. Returns the role as it stands afterwards, with `held` True
        when `candidate` holds it. Candidate ids must be unique per process run (worker ids are)."""

    @abc.abstractmethod
    async def resign(self, name: str, candidate: str) -> None:
        """Give the role up at once if `candidate` holds it (graceful shutdown), so another can take it without
        waiting for the lease to lapse. A no-op otherwise."""

    @abc.abstractmethod
    async def leaders(self) -> list[Leadership]:
        """Every role whose lease runs now, by name (for operators: who leads)."""

    # ---- small key-value space for settings, idempotency keys, cron de-duplication ----------------------------

    @abc.abstractmethod
    async def kv_get(self, key: str) -> str | None: ...

    @abc.abstractmethod
    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        """Set a value (expiring after ttl seconds if given). With only_if_absent, set only when no live value
        exists and return whether it was set (an atomic test-and-set: cron de-duplication, first-start token)."""

    @abc.abstractmethod
    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        """Put `value` (expiring after ttl seconds if given) only when the key has no live value, atomically; return
        the value in place afterwards and whether this call put it. An expired value counts as absent; a live one
        keeps its own value and expiry."""

    @abc.abstractmethod
    async def kv_delete(self, key: str) -> None: ...

    # ---- cron schedules made at runtime and the runs of every schedule (issue 13 item 5) ------------------------

    @abc.abstractmethod
    async def put_schedule(self, record: ScheduleRecord, *, create: bool) -> bool:
        """Store a runtime schedule (its `to_doc()` under its name). `create=True` inserts only when no schedule has
        that name (False: one has, nothing written); `create=False` replaces only an existing one (False: none).
        Atomic: of concurrent creates of one name exactly one returns True."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleRecord | None: ...

    @abc.abstractmethod
    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every runtime schedule, by name."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """Delete a runtime schedule and its run records; False when there was none."""

    @abc.abstractmethod
    async def record_schedule_run(self, run: ScheduleRun, *, keep: int = SCHEDULE_RUNS_KEPT) -> bool:
        """Record that an occurrence of `run.schedule` was handled, keyed by (schedule, occurrence): only the first
        record of an occurrence is kept, and True says this call wrote it (atomic: of concurrent records of one
        occurrence exactly one returns True). Then only the `keep` newest runs of the schedule are kept."""

    @abc.abstractmethod
    async def schedule_runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        """The run records of a schedule (runtime or declared in code), newest occurrence first."""


JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
