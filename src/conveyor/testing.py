"""Testing helpers for applications that use Conveyor (Arrower's testing queue, SPEC §4).

Two ways in:

    from conveyor.testing import TestConveyor, test_queue

    app = TestConveyor()                  # a fresh app on an in-memory store; nothing runs by itself
    app.enqueue("send_email", {"to": "a@b"})
    app.assert_queued("send_email", 1)
    app.assert_contains("send_email", {"to": "a@b"})
    app.drain()                           # run what is queued now, in this process

    queue = test_queue(my_app)            # point an existing app (with its tasks) at an in-memory store
    ...                                   # code under test calls my_app.enqueue(...)
    queue.assert_not_empty()
    queue.close()                         # give my_app its own store back

and the pytest fixture `conveyor_queue` (plugin `conveyor.pytest_plugin`), which wraps your `conveyor_app`
fixture when you define one, else gives a fresh `TestConveyor`.

Every check comes twice: `queue.queued("task", 2)` returns a bool (testify style), `queue.assert_queued("task", 2)`
raises AssertionError listing what is queued and how it differs from what was expected.

The in-memory store lives on a private event loop thread, so these helpers work the same from sync tests and from
inside `async def` tests (where calling a sync method on an app bound to the test's own loop would deadlock).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.app import Conveyor
from conveyor.context import JobContext
from conveyor.execution import execute
from conveyor.model import JSON, Attempt, Job, JobFilter, JobStatus
from conveyor.runtime import Binding, Runtime
from conveyor.store import Store, open_store

if TYPE_CHECKING:
    from conveyor.store.memory import MemoryStore

__all__ = ["QueueHelpers", "TestConveyor", "TestQueue", "test_queue"]

TEST_WORKER_ID = "conveyor-testing"
_PAGE = 1000


def _memory_url() -> str:
    return f"memory://conveyor-test-{uuid.uuid4().hex}"


class QueueHelpers:
    """Assertions and helpers over the queued (pending) jobs of `self._app`, in enqueue order."""

    __test__ = False  # not a pytest test class

    @property
    def _app(self) -> Conveyor:
        raise NotImplementedError

    # ---- reading --------------------------------------------------------------------------------------------

    def jobs(self, task: str | None = None, *, status: JobStatus | None = JobStatus.PENDING) -> list[Job]:
        """Jobs (pending by default, `status=None` for all) in enqueue order, optionally of one task."""
        app = self._app

        async def read() -> list[Job]:
            out: list[Job] = []
            offset = 0
            while True:
                page = await app.store.list_jobs(JobFilter(task=task, status=status), _PAGE, offset)
                out.extend(page.items)
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    break
            out.sort(key=lambda j: (j.created, j.id))
            return out

        return app.runtime.call_sync(read)

    def get_first(self) -> Job | None:
        return self.get(1)

    def get(self, pos: int) -> Job | None:
        """The pos-th queued job (1-based), or None."""
        jobs = self.jobs()
        return jobs[pos - 1] if 1 <= pos <= len(jobs) else None

    def get_first_of(self, task: str) -> Job | None:
        return self.get_of(task, 1)

    def get_of(self, task: str, pos: int) -> Job | None:
        """The pos-th queued job of `task` (1-based), or None."""
        jobs = self.jobs(task)
        return jobs[pos - 1] if 1 <= pos <= len(jobs) else None

    # ---- bool checks ----------------------------------------------------------------------------------------

    def empty(self) -> bool:
        return not self.jobs()

    def not_empty(self) -> bool:
        return bool(self.jobs())

    def queued(self, task: str, n: int) -> bool:
        """Exactly n queued jobs of `task`."""
        return len(self.jobs(task)) == n

    def queued_total(self, n: int) -> bool:
        return len(self.jobs()) == n

    def contains(self, task: str, payload: JSON = None) -> bool:
        """Some queued job of `task` whose payload contains `payload` (dict subset, recursively; else equal).
        `payload=None` matches any payload."""
        return any(_subset_diff(payload, job.payload) == [] for job in self.jobs(task))

    def not_contains(self, task: str, payload: JSON = None) -> bool:
        return not self.contains(task, payload)

    # ---- asserting forms ------------------------------------------------------------------------------------

    def assert_empty(self) -> None:
        jobs = self.jobs()
        if jobs:
            raise AssertionError(f"expected no queued jobs, found {len(jobs)}:\n{_listing(jobs)}")

    def assert_not_empty(self) -> None:
        if not self.jobs():
            raise AssertionError("expected queued jobs, found none")

    def assert_queued(self, task: str, n: int) -> None:
        jobs = self.jobs(task)
        if len(jobs) != n:
            everything = self.jobs()
            raise AssertionError(
                f"expected {n} queued job(s) of task {task!r}, found {len(jobs)}.\n"
                f"Queued ({len(everything)}):\n{_listing(everything)}"
            )

    def assert_queued_total(self, n: int) -> None:
        jobs = self.jobs()
        if len(jobs) != n:
            raise AssertionError(f"expected {n} queued job(s) in total, found {len(jobs)}:\n{_listing(jobs)}")

    def assert_contains(self, task: str, payload: JSON = None) -> None:
        jobs = self.jobs(task)
        if any(_subset_diff(payload, job.payload) == [] for job in jobs):
            return
        if not jobs:
            everything = self.jobs()
            raise AssertionError(
                f"expected a queued job of task {task!r}, found none.\nQueued ({len(everything)}):\n"
                f"{_listing(everything)}"
            )
        lines = [f"expected a queued job of task {task!r} with payload containing {_short(payload)}; none matches:"]
        for i, job in enumerate(jobs, 1):
            lines.append(f"  {i}. {job.id}: {_short(job.payload)}")
            lines.extend(f"       - {d}" for d in _subset_diff(payload, job.payload))
        raise AssertionError("\n".join(lines))

    def assert_not_contains(self, task: str, payload: JSON = None) -> None:
        matching = [job for job in self.jobs(task) if _subset_diff(payload, job.payload) == []]
        if matching:
            raise AssertionError(
                f"expected no queued job of task {task!r} matching {_short(payload)}, found {len(matching)}:\n"
                f"{_listing(matching)}"
            )

    # ---- running and resetting ------------------------------------------------------------------------------

    def drain(
        self,
        limit: int = 10_000,
        *,
        include_scheduled: bool = False,
        raise_errors: bool = False,
        queues: Sequence[str] | None = None,
    ) -> list[Attempt]:
        """Run queued due jobs now, one at a time in claim order, in this process — including jobs they enqueue —
        until none is due or `limit` ran. It claims as a worker does (namespaces with auto_run off are left to
        `run_next`), but any task: a job whose task is not registered runs and fails saying so. `include_scheduled`
        also runs delayed jobs (and retries) at once.
        Returns each run's attempt record; `raise_errors` turns the first failed run into an AssertionError."""
        app = self._app
        return app.runtime.call_sync(lambda: _drain(app.runtime, limit, include_scheduled, raise_errors, queues))

    def reset(self) -> None:
        """Forget every job (and attempt, namespace, kv entry): the app gets a fresh in-memory store."""
        runtime = self._app.runtime
        old = runtime.store
        runtime.call_sync(old.close)
        _forget(old)
        runtime.replace_store(open_store(_memory_url()))


async def _drain(
    app: Runtime, limit: int, include_scheduled: bool, raise_errors: bool, queues: Sequence[str] | None
) -> list[Attempt]:
    store = app.store
    ran: list[Attempt] = []
    while len(ran) < limit:
        if include_scheduled:
            for job in (await store.list_jobs(JobFilter(status=JobStatus.PENDING), _PAGE, 0)).items:
                if job.is_scheduled():
                    await store.run_now(job.id)
        names = list(queues) if queues else sorted({q.name for q in await store.list_queues()})
        if not names:
            break
        claimed = await store.claim(TEST_WORKER_ID, names, 1, app.lease)
        if not claimed:
            break
        job = claimed[0]
        execution = await execute(app, job, JobContext(job, app, TEST_WORKER_ID))
        finish = execution.finish
        if not execution.committed:
            await store.finish([finish])
        attempt = finish.attempt
        if attempt is None:
            continue
        app.events.publish_run(job, attempt)
        ran.append(attempt)
        if raise_errors and not attempt.succeeded:
            raise AssertionError(
                f"job {job.id} ({job.task}) failed with status {attempt.status_code}: {attempt.error}\n"
                f"{attempt.traceback or ''}"
            )
    return ran


class TestConveyor(QueueHelpers, Conveyor):
    """A Conveyor on a fresh in-memory store for application tests: register tasks, enqueue, assert, drain.

    Nothing runs by itself (no worker): jobs stay queued until `drain()`. Close it (or use `with`) when done."""

    __test__ = False

    def __init__(self, url: str | None = None, **options: Any) -> None:
        Conveyor.__init__(self, url or _memory_url(), **options)
        self.runtime.use_portal()

    @property
    def _app(self) -> Conveyor:
        return self

    def close(self) -> None:
        store = self.store
        Conveyor.close(self)
        _forget(store)


class TestQueue(QueueHelpers):
    """Helpers over an existing app whose store was swapped for an in-memory one (see `test_queue`)."""

    __test__ = False

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        self._saved: Binding | None = None

    @property
    def _app(self) -> Conveyor:
        return self.app

    def install(self) -> None:
        """Point the app at a fresh in-memory store, on a loop of its own (what `test_queue` does)."""
        url = _memory_url()
        self._saved = self.app.runtime.rebind(open_store(url), url)

    def close(self) -> None:
        """Give the app its own store back."""
        if self._saved is None:
            return
        runtime = self.app.runtime
        store = runtime.store
        runtime.restore(self._saved)
        _forget(store)
        self._saved = None

    def __enter__(self) -> TestQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_queue(app: Conveyor) -> TestQueue:
    """Point `app` (with its registered tasks and cron entries) at a fresh in-memory store until `close()`."""
    queue = TestQueue(app)
    queue.install()
    return queue


test_queue.__test__ = False  # type: ignore[attr-defined]


def _forget(store: Store) -> None:
    if store.scheme == "memory":
        memory: MemoryStore = store  # type: ignore[assignment]
        url = getattr(memory, "url", None)
        if isinstance(url, str):
            type(memory).forget(url)


# ---- diffs --------------------------------------------------------------------------------------------------


def _subset_diff(expected: JSON, actual: JSON, path: str = "payload") -> list[str]:
    """How `actual` fails to contain `expected` ([] when it does). Dicts: every expected key present and
    containing; anything else: equal. None expects nothing."""
    if expected is None:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object containing {_short(expected)}, got {_short(actual)}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing (expected {_short(value)})")
            elif isinstance(value, dict):
                out.extend(_subset_diff(value, actual[key], f"{path}.{key}"))
            elif actual[key] != value:
                out.append(f"{path}.{key}: expected {_short(value)}, got {_short(actual[key])}")
        return out
    if expected != actual:
        return [f"{path}: expected {_short(expected)}, got {_short(actual)}"]
    return []


def _short(value: JSON, limit: int = 200) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listing(jobs: Sequence[Job]) -> str:
    if not jobs:
        return "  (none)"
    lines = [
        f"  {i}. {job.task} {_short(job.payload)} (id {job.id}, queue {job.queue})" for i, job in enumerate(jobs, 1)
    ]
    return "\n".join(lines)
