"""Store conformance: a Hypothesis state machine drives a store against a tiny pure-Python model of the contract.

The model (`Model`) restates store/base.py's rules in the plainest code possible — claim order, served tasks, serial
lanes, pauses, queue caps, namespace settings (auto_run), unique keys, fencing tokens, release, rescue (which keeps
run_at), namespace deletion and the management transitions — and after every step the store's jobs and stats must
match it. Times that the store picks itself (run_at after requeue, and after run_now of a scheduled job) are taken
from what the store returns; everything else is chosen by the test from a few fixed instants so that order ties are
decided by id, exactly as the rule says.

Kept small (few examples, short runs) so that it stays quick on every store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conveyor.conformance.harness import StoreHarness
from conveyor.conformance.helpers import attempt
from conveyor.errors import Conflict, InvalidTransition
from conveyor.model import (
    Finish,
    Job,
    JobFilter,
    JobStatus,
    Lease,
    Namespace,
    NewJob,
    QueueSettings,
    serial_key_for,
    utcnow,
)
from conveyor.store import Store

T = TypeVar("T")
NAMESPACES = (0, 1)  # indexes into each run's own two namespaces
QUEUES = ("a", "b")
USERS = (None, None, "u1", "u2")
GROUPS = (None, None, None, "g")
UNIQUE = (None, None, "k1", "k2")
FINISHES = ("complete", "fail", "retry_due", "retry_later", "cancelled", "release")
TASKS = ("t", "s")
Spec = tuple[int, str, int, int, str | None, str | None, str | None, int, str]
JOB_SPECS = st.tuples(
    st.sampled_from(NAMESPACES),
    st.sampled_from(QUEUES),
    st.integers(-1, 1),  # priority
    st.integers(0, 4),  # 0-2: one of three fixed past instants (due); 3-4: the future (scheduled)
    st.sampled_from(USERS),
    st.sampled_from(GROUPS),
    st.sampled_from(UNIQUE),
    st.integers(1, 3),  # max_attempts
    st.sampled_from(TASKS),
)


@dataclass
class MJob:
    id: str
    ns: str
    queue: str
    priority: int
    run_at: datetime
    status: JobStatus
    attempts: int
    max_attempts: int
    try_number: int
    lane: tuple[str, str] | None
    unique: str | None
    user: str | None
    task: str = "t"
    cancel_requested: bool = False
    records: int = 0  # attempt records stored


class Model:
    """The contract in plain Python."""

    def __init__(self) -> None:
        self.jobs: dict[str, MJob] = {}
        self.paused: set[tuple[str, str]] = set()
        self.caps: dict[tuple[str, str], int] = {}
        self.off: set[str] = set()  # namespaces whose auto_run is off

    def active_unique(self, ns: str, key: str) -> MJob | None:
        for j in self.jobs.values():
            if j.ns == ns and j.unique == key and not j.status.is_final:
                return j
        return None

    def lane_head(self, lane: tuple[str, str]) -> MJob | None:
        pending = [j for j in self.jobs.values() if j.lane == lane and j.status is JobStatus.PENDING]
        return min(pending, key=lambda j: (j.priority, j.id)) if pending else None

    def lane_busy(self, lane: tuple[str, str]) -> bool:
        return any(j.lane == lane and j.status is JobStatus.PROCESSING for j in self.jobs.values())

    def expected_claim(
        self, queues: list[str], limit: int, namespaces: list[str] | None, tasks: list[str] | None, now: datetime
    ) -> list[str]:
        candidates = sorted(
            (
                j
                for j in self.jobs.values()
                if j.status is JobStatus.PENDING
                and j.queue in queues
                and (namespaces is None or j.ns in namespaces)
                and (tasks is None or j.task in tasks)
                and j.ns not in self.off
                and (j.ns, j.queue) not in self.paused
            ),
            key=lambda j: (j.priority, j.run_at, j.id),
        )
        running: dict[tuple[str, str], int] = {}
        for j in self.jobs.values():
            if j.status is JobStatus.PROCESSING:
                running[(j.ns, j.queue)] = running.get((j.ns, j.queue), 0) + 1
        taken: list[str] = []
        lanes: set[tuple[str, str]] = set()
        for j in candidates:
            if len(taken) >= limit:
                break
            if j.run_at > now:
                continue
            cap = self.caps.get((j.ns, j.queue))
            if cap is not None and running.get((j.ns, j.queue), 0) >= cap:
                continue
            if j.lane is not None:
                if j.lane in lanes or self.lane_busy(j.lane) or self.lane_head(j.lane) is not j:
                    continue
                lanes.add(j.lane)
            running[(j.ns, j.queue)] = running.get((j.ns, j.queue), 0) + 1
            taken.append(j.id)
        return taken

    def start(self, job_id: str) -> None:
        j = self.jobs[job_id]
        j.status = JobStatus.PROCESSING
        j.attempts += 1
        j.try_number += 1
        j.cancel_requested = False


def _pick(ids: list[str], index: int) -> str:
    return sorted(ids)[index % len(ids)]


def _make_machine(store: Store, loop: asyncio.AbstractEventLoop) -> type[RuleBasedStateMachine]:
    """A machine class bound to one open store. Each run works in two namespaces of its own, so runs share the
    store (one schema / key prefix for the whole test, which keeps PostgreSQL and Redis quick) without seeing each
    other; claims over "every namespace" exclude the namespaces of earlier runs."""
    earlier: list[str] = []

    class StoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = store
            run_id = uuid.uuid4().hex[:10]
            self.ns = (f"m{run_id}", f"n{run_id}")
            self.model = Model()
            self.base = utcnow()
            self.past = [self.base - timedelta(seconds=s) for s in (30, 20, 10)]
            self.future = self.base + timedelta(hours=1)
            self.tokens: set[str] = set()  # every fencing token handed out: none may come twice
            self.named: set[str] = set()  # namespaces with a stored record

        def run(self, coro: Coroutine[Any, Any, T]) -> T:
            return loop.run_until_complete(coro)

        def teardown(self) -> None:
            earlier.extend(self.ns)

        def ids_in(self, *statuses: JobStatus) -> list[str]:
            return [j.id for j in self.model.jobs.values() if not statuses or j.status in statuses]

        # ---- rules --------------------------------------------------------------------------------------------

        @initialize(specs=st.lists(JOB_SPECS, min_size=4, max_size=10))
        def prefill(self, specs: list[Spec]) -> None:
            """Start every run with work to do, so that short runs still exercise claims and lanes."""
            self.enqueue(specs)

        @rule(specs=st.lists(JOB_SPECS, min_size=1, max_size=4))
        def enqueue(self, specs: list[Spec]) -> None:
            news = [
                NewJob.build(
                    task,
                    {"n": len(self.model.jobs) + i},
                    namespace=self.ns[ns],
                    queue=q,
                    priority=prio,
                    run_at=self.future if when >= len(self.past) else self.past[when],
                    user_id=user,
                    group_key=group,
                    unique_key=key,
                    max_attempts=tries,
                )
                for i, (ns, q, prio, when, user, group, key, tries, task) in enumerate(specs)
            ]
            got = self.run(self.store.enqueue(news))
            assert len(got) == len(news)
            for new, job in zip(news, got, strict=True):
                holder = self.model.active_unique(new.namespace, new.unique_key) if new.unique_key else None
                if holder is not None:
                    assert job.duplicate and job.id == holder.id, "unique key: expected the active job back"
                    continue
                assert not job.duplicate and job.id == new.id
                self.model.jobs[job.id] = MJob(
                    id=job.id,
                    ns=new.namespace,
                    queue=new.queue,
                    priority=new.priority,
                    run_at=job.run_at,
                    status=JobStatus.PENDING,
                    attempts=0,
                    max_attempts=new.max_attempts,
                    try_number=0,
                    lane=None if new.serial_key is None else (new.namespace, new.serial_key),
                    unique=new.unique_key,
                    user=new.user_id,
                    task=new.task,
                )

        @rule(
            queues=st.sampled_from([["a", "b"], ["a"], ["b"]]),
            limit=st.integers(1, 5),
            which=st.sampled_from([None, None, (0,), (1,), (0, 1)]),
            tasks=st.sampled_from([None, None, ["t"], ["s"], ["t", "s"]]),
        )
        def claim(self, queues: list[str], limit: int, which: tuple[int, ...] | None, tasks: list[str] | None) -> None:
            namespaces = None if which is None else [self.ns[i] for i in which]
            now = utcnow()
            expected = self.model.expected_claim(queues, limit, namespaces, tasks, now)
            got = self.run(
                self.store.claim(
                    "w",
                    queues,
                    limit,
                    timedelta(seconds=60),
                    tasks=tasks,
                    namespaces=namespaces,
                    exclude_namespaces=earlier,
                )
            )
            assert [j.id for j in got] == expected
            for job in got:
                self.model.start(job.id)
                m = self.model.jobs[job.id]
                assert (job.status, job.attempts, job.try_number) == (JobStatus.PROCESSING, m.attempts, m.try_number)
                assert job.lease_token and job.lease_token not in self.tokens
                self.tokens.add(job.lease_token)

        @precondition(lambda self: bool(self.ids_in(JobStatus.PROCESSING)))
        @rule(index=st.integers(0, 1000), kind=st.sampled_from(FINISHES), when=st.integers(0, 2))
        def finish(self, index: int, kind: str, when: int) -> None:
            job_id = _pick(self.ids_in(JobStatus.PROCESSING), index)
            m = self.model.jobs[job_id]
            job = self.run(self.store.get_job(job_id))
            assert job is not None
            record = attempt(job, status_code=200 if kind == "complete" else 500)
            if kind == "release":
                f = Finish(job.lease, JobStatus.PENDING, release=True)
            elif kind == "complete":
                f = Finish(job.lease, JobStatus.COMPLETED, attempt=record, result={"ok": 1})
            elif kind == "fail":
                f = Finish(job.lease, JobStatus.FAILED, attempt=record, error="e")
            elif kind == "cancelled":
                f = Finish(job.lease, JobStatus.CANCELLED, attempt=record, error="c")
            else:
                run_at = self.past[when] if kind == "retry_due" else self.future
                f = Finish(job.lease, JobStatus.PENDING, attempt=record, run_at=run_at, error="r")
            stale = Finish(Lease(job_id, uuid.uuid4().hex), JobStatus.COMPLETED)
            assert self.run(self.store.finish([stale, f, f])) == [False, True, False]
            if kind == "release":
                m.status = JobStatus.PENDING
                m.attempts -= 1
                m.try_number -= 1
            else:
                m.records += 1
                m.status = {
                    "complete": JobStatus.COMPLETED,
                    "fail": JobStatus.FAILED,
                    "cancelled": JobStatus.CANCELLED,
                }.get(kind, JobStatus.PENDING)
                if m.status is JobStatus.PENDING:
                    m.run_at = f.run_at or m.run_at
            assert len(self.run(self.store.attempts(job_id))) == m.records

        @precondition(lambda self: bool(self.model.jobs))
        @rule(index=st.integers(0, 1000))
        def cancel(self, index: int) -> None:
            m = self.model.jobs[_pick(self.ids_in(), index)]
            if m.status.is_final:
                try:
                    self.run(self.store.cancel(m.id))
                except InvalidTransition:
                    return
                raise AssertionError(f"cancel of a {m.status} job must raise InvalidTransition")
            got = self.run(self.store.cancel(m.id))
            if m.status is JobStatus.PENDING:
                m.status = JobStatus.CANCELLED
            else:
                m.cancel_requested = True
            assert got.status is m.status

        @precondition(lambda self: bool(self.model.jobs))
        @rule(index=st.integers(0, 1000))
        def requeue(self, index: int) -> None:
            m = self.model.jobs[_pick(self.ids_in(), index)]
            if m.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                try:
                    self.run(self.store.requeue(m.id))
                except InvalidTransition:
                    return
                raise AssertionError(f"requeue of a {m.status} job must raise InvalidTransition")
            if m.unique is not None and self.model.active_unique(m.ns, m.unique) is not None:
                return  # two active jobs with one key: the contract does not say; not exercised
            got = self.run(self.store.requeue(m.id))
            m.status, m.attempts, m.run_at = JobStatus.PENDING, 0, got.run_at
            assert (got.status, got.attempts) == (JobStatus.PENDING, 0)

        @precondition(lambda self: bool(self.model.jobs))
        @rule(index=st.integers(0, 1000), force=st.booleans())
        def delete(self, index: int, force: bool) -> None:
            m = self.model.jobs[_pick(self.ids_in(), index)]
            if not force and m.status not in (JobStatus.PENDING, JobStatus.FAILED):
                try:
                    self.run(self.store.delete(m.id))
                except InvalidTransition:
                    return
                raise AssertionError(f"delete of a {m.status} job must raise InvalidTransition")
            got = self.run(self.store.delete(m.id, force=force))
            assert got.id == m.id and got.status is m.status
            del self.model.jobs[m.id]

        @precondition(lambda self: bool(self.model.jobs))
        @rule(index=st.integers(0, 1000))
        def run_now(self, index: int) -> None:
            m = self.model.jobs[_pick(self.ids_in(), index)]
            if m.status is not JobStatus.PENDING:
                try:
                    self.run(self.store.run_now(m.id))
                except InvalidTransition:
                    return
                raise AssertionError(f"run_now of a {m.status} job must raise InvalidTransition")
            was_due = m.run_at <= utcnow()
            got = self.run(self.store.run_now(m.id)).run_at
            if was_due:
                assert got == m.run_at  # a job already due keeps its place
            m.run_at = got

        @rule()
        def rescue_everything(self) -> None:
            rescued = [
                job
                # Past every 60 s lease but well before `future`: stores may treat rescue's `now` as the present
                # for other bookkeeping too (e.g. promoting scheduled jobs), which must not make them due here.
                for job in self.run(self.store.rescue(now=utcnow() + timedelta(minutes=5)))
                if job.namespace in self.ns  # earlier runs may have left processing jobs behind
            ]
            assert sorted(j.id for j in rescued) == sorted(self.ids_in(JobStatus.PROCESSING))
            for job in rescued:
                m = self.model.jobs[job.id]
                m.records += 1
                m.status = JobStatus.PENDING if m.attempts < m.max_attempts else JobStatus.FAILED
                assert job.status is m.status
                assert job.run_at == m.run_at  # a rescued job keeps its place in the claim order
                assert len(self.run(self.store.attempts(job.id))) == m.records

        @rule(
            index=st.sampled_from(NAMESPACES),
            queue=st.sampled_from(QUEUES),
            paused=st.sampled_from([False, False, True]),
            cap=st.sampled_from([1, 2, None]),
        )
        def queue_settings(self, index: int, queue: str, paused: bool, cap: int | None) -> None:
            ns = self.ns[index]
            self.run(self.store.put_queue_settings(QueueSettings(ns, queue, paused=paused, concurrency=cap)))
            (self.model.paused.add if paused else self.model.paused.discard)((ns, queue))
            if cap is None:
                self.model.caps.pop((ns, queue), None)
            else:
                self.model.caps[(ns, queue)] = cap

        @rule(index=st.sampled_from(NAMESPACES), auto_run=st.booleans())
        def namespace_settings(self, index: int, auto_run: bool) -> None:
            ns = self.ns[index]
            self.run(self.store.put_namespace(Namespace(ns, auto_run=auto_run)))
            (self.model.off.discard if auto_run else self.model.off.add)(ns)
            self.named.add(ns)

        @precondition(lambda self: bool(self.model.jobs))
        @rule(index=st.sampled_from(NAMESPACES))
        def delete_namespace(self, index: int) -> None:
            ns = self.ns[index]
            had = any(j.ns == ns for j in self.model.jobs.values()) or ns in self.named
            assert self.run(self.store.delete_namespace(ns)) is had
            self.model.jobs = {i: j for i, j in self.model.jobs.items() if j.ns != ns}
            self.model.off.discard(ns)
            self.model.paused = {k for k in self.model.paused if k[0] != ns}
            self.model.caps = {k: v for k, v in self.model.caps.items() if k[0] != ns}
            self.named.discard(ns)

        @rule(index=st.sampled_from(NAMESPACES), user=st.sampled_from(["u1", "u2"]))
        def claim_user(self, index: int, user: str) -> None:
            ns = self.ns[index]
            lane = (ns, serial_key_for(None, user) or "")
            head = self.model.lane_head(lane)
            busy = self.model.lane_busy(lane)
            pending_exists = any(j.lane == lane and j.status is JobStatus.PENDING for j in self.model.jobs.values())
            assert self.run(self.store.has_pending_job(ns, user)) is pending_exists
            try:
                got: Job | None = self.run(self.store.claim_user(ns, user, "runner", timedelta(seconds=60)))
            except Conflict:
                assert busy, "Conflict although no job of the lane is processing"
                return
            assert not busy, "a processing job of the lane must make claim_user raise Conflict"
            if head is None or head.run_at > utcnow():
                assert got is None
                return
            assert got is not None and got.id == head.id  # auto_run off or not: Run takes it
            assert got.lease_token and got.lease_token not in self.tokens
            self.tokens.add(got.lease_token)
            self.model.start(head.id)

        # ---- invariants ---------------------------------------------------------------------------------------

        @invariant()
        def jobs_match(self) -> None:
            stored: dict[str, Job] = {}
            for ns in self.ns:
                page = self.run(self.store.list_jobs(JobFilter(namespace=ns), limit=10_000))
                assert page.total == len(page.items)
                stored.update((j.id, j) for j in page.items)
            assert set(stored) == set(self.model.jobs)
            for job_id, m in self.model.jobs.items():
                job = stored[job_id]
                assert (job.status, job.attempts, job.try_number) == (m.status, m.attempts, m.try_number), job_id
                assert (job.lease_token is not None) == (m.status is JobStatus.PROCESSING), job_id
                if m.status is JobStatus.PROCESSING:
                    assert job.cancel_requested is m.cancel_requested
                # Order ties are judged on the store's own representation of run_at (its precision).
                m.run_at = job.run_at

        @invariant()
        def stats_match(self) -> None:
            later = self.future - timedelta(minutes=1)  # scheduled jobs run at `future`; every other is past
            for ns in self.ns:
                stats = self.run(self.store.stats(namespace=ns))
                jobs = [j for j in self.model.jobs.values() if j.ns == ns]
                for status in JobStatus:
                    assert getattr(stats, status.value) == sum(1 for j in jobs if j.status is status), status
                scheduled = sum(1 for j in jobs if j.status is JobStatus.PENDING and j.run_at > later)
                assert stats.scheduled == scheduled

    return StoreMachine


def test_store_matches_the_model(store_harness: StoreHarness, tmp_path: Path) -> None:
    # A sync test with its own loop: Hypothesis drives the rules synchronously, and the store's connections must
    # live on the loop that runs them.
    loop = asyncio.new_event_loop()
    url = store_harness.isolated_url(tmp_path)
    store = store_harness.open(url)
    try:
        loop.run_until_complete(store.open())
        run_state_machine_as_test(
            _make_machine(store, loop),
            settings=settings(
                max_examples=60 if store_harness.name == "memory" else 30,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        try:
            loop.run_until_complete(store.close())
            loop.run_until_complete(store_harness.cleanup(url))
        finally:
            loop.close()
