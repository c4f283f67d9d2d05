"""conveyor.testing: the in-memory test queue, its assertions and helpers, and the pytest fixture."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from conveyor import Conveyor, JobStatus
from conveyor.pytest_plugin import conveyor_queue
from conveyor.testing import QueueHelpers, TestConveyor, test_queue

__all__ = ["conveyor_queue"]


@pytest.fixture
def queue() -> Iterator[TestConveyor]:
    app = TestConveyor()
    try:
        yield app
    finally:
        app.close()


def test_empty_and_not_empty(queue: TestConveyor) -> None:
    assert queue.empty() and not queue.not_empty()
    queue.assert_empty()
    with pytest.raises(AssertionError, match="expected queued jobs, found none"):
        queue.assert_not_empty()
    queue.enqueue("send_email", {"to": "a@b"})
    assert queue.not_empty() and not queue.empty()
    queue.assert_not_empty()
    with pytest.raises(AssertionError) as info:
        queue.assert_empty()
    assert "send_email" in str(info.value) and '"to": "a@b"' in str(info.value)


def test_queued_counts_by_task_and_in_total(queue: TestConveyor) -> None:
    queue.enqueue("a", 1)
    queue.enqueue("a", 2)
    queue.enqueue("b", 3)
    assert queue.queued("a", 2) and queue.queued("b", 1) and queue.queued("c", 0)
    assert not queue.queued("a", 1)
    assert queue.queued_total(3) and not queue.queued_total(2)
    queue.assert_queued("a", 2)
    queue.assert_queued_total(3)
    with pytest.raises(AssertionError) as info:
        queue.assert_queued("a", 3)
    message = str(info.value)
    assert "expected 3 queued job(s) of task 'a', found 2" in message
    assert "1. a 1" in message and "3. b 3" in message
    with pytest.raises(AssertionError, match="expected 4 queued job"):
        queue.assert_queued_total(4)


def test_contains_matches_payload_subsets_and_explains_misses(queue: TestConveyor) -> None:
    queue.enqueue("send_email", {"to": "a@b", "template": {"name": "welcome", "lang": "en"}, "n": 1})
    assert queue.contains("send_email")
    assert queue.contains("send_email", {"to": "a@b"})
    assert queue.contains("send_email", {"template": {"name": "welcome"}})
    assert not queue.contains("send_email", {"to": "c@d"})
    assert not queue.contains("other")
    assert queue.not_contains("send_email", {"to": "c@d"})
    queue.assert_contains("send_email", {"to": "a@b"})
    queue.assert_not_contains("send_email", {"n": 2})
    with pytest.raises(AssertionError) as info:
        queue.assert_contains("send_email", {"to": "c@d", "template": {"lang": "fr"}, "missing": True})
    message = str(info.value)
    assert 'payload.to: expected "c@d", got "a@b"' in message
    assert 'payload.template.lang: expected "fr", got "en"' in message
    assert "payload.missing: missing" in message
    with pytest.raises(AssertionError, match="found none"):
        queue.assert_contains("other")
    with pytest.raises(AssertionError, match="expected no queued job"):
        queue.assert_not_contains("send_email", {"to": "a@b"})


def test_get_helpers_are_one_based_in_enqueue_order(queue: TestConveyor) -> None:
    assert queue.get_first() is None
    queue.enqueue("a", "first")
    queue.enqueue("b", "second")
    queue.enqueue("a", "third")
    assert queue.get_first().payload == "first"  # type: ignore[union-attr]
    assert queue.get(2).payload == "second"  # type: ignore[union-attr]
    assert queue.get(4) is None and queue.get(0) is None
    assert queue.get_first_of("a").payload == "first"  # type: ignore[union-attr]
    assert queue.get_of("a", 2).payload == "third"  # type: ignore[union-attr]
    assert queue.get_of("b", 2) is None
    assert [j.payload for j in queue.jobs()] == ["first", "second", "third"]
    assert [j.payload for j in queue.jobs("a")] == ["first", "third"]


def test_reset_forgets_everything(queue: TestConveyor) -> None:
    queue.enqueue("a", 1)
    queue.reset()
    queue.assert_empty()
    queue.enqueue("a", 2)
    queue.assert_queued_total(1)


def test_drain_runs_jobs_including_those_they_enqueue(queue: TestConveyor) -> None:
    ran: list[str] = []

    @queue.task("parent")
    def parent(payload: int) -> str:
        ran.append(f"parent {payload}")
        queue.enqueue("child", payload * 10)
        return "spawned"

    @queue.task("child")
    async def child(payload: int) -> int:
        ran.append(f"child {payload}")
        return payload

    queue.enqueue("parent", 1)
    queue.enqueue("parent", 2)
    attempts = queue.drain()
    assert ran == ["parent 1", "parent 2", "child 10", "child 20"]
    assert [a.status_code for a in attempts] == [200, 200, 200, 200]
    queue.assert_empty()
    done = queue.jobs(status=JobStatus.COMPLETED)
    assert sorted(str(j.result) for j in done) == ["10", "20", "spawned", "spawned"]


def test_drain_limit_scheduled_jobs_and_errors(queue: TestConveyor) -> None:
    @queue.task("ok")
    def ok(payload: None) -> None:
        return None

    @queue.task("broken", max_attempts=2)
    def broken(payload: None) -> None:
        raise ValueError("nope")

    for _ in range(3):
        queue.enqueue("ok")
    later = queue.enqueue("ok", delay=3600)
    assert len(queue.drain(limit=2)) == 2
    assert len(queue.drain()) == 1
    queue.assert_queued("ok", 1)  # the delayed one stays until include_scheduled
    assert len(queue.drain(include_scheduled=True)) == 1
    assert queue.get_job(later.id).status is JobStatus.COMPLETED  # type: ignore[union-attr]

    queue.enqueue("broken")
    attempts = queue.drain(include_scheduled=True)
    assert [a.status_code for a in attempts] == [500, 500]
    queue.enqueue("broken")
    with pytest.raises(AssertionError, match="ValueError: nope"):
        queue.drain(raise_errors=True)


async def test_helpers_work_inside_async_tests(queue: TestConveyor) -> None:
    @queue.task("tick")
    async def tick(payload: int) -> int:
        await asyncio.sleep(0)
        return payload + 1

    await queue.aenqueue("tick", 1)
    queue.enqueue("tick", 2)
    queue.assert_queued("tick", 2)
    attempts = queue.drain()
    assert sorted(a.result for a in attempts) == [2, 3]
    queue.assert_empty()


def test_test_queue_swaps_an_apps_store_and_gives_it_back(tmp_path: object) -> None:
    app = Conveyor("memory://production-like")

    @app.task("welcome")
    def welcome(payload: dict[str, str]) -> str:
        return f"hi {payload['name']}"

    original = app.store
    with test_queue(app) as q:
        app.enqueue("welcome", {"name": "ada"})  # what the code under test does
        q.assert_queued("welcome", 1)
        q.assert_contains("welcome", {"name": "ada"})
        (attempt,) = q.drain()
        assert attempt.result == "hi ada"
        assert app.store is not original
    assert app.store is original
    app.close()


def test_pytest_fixture_gives_a_fresh_test_conveyor(conveyor_queue: QueueHelpers) -> None:
    assert isinstance(conveyor_queue, TestConveyor)
    conveyor_queue.enqueue("x")
    conveyor_queue.assert_queued("x", 1)


class TestFixtureWrapsTheAppFixture:
    @pytest.fixture
    def conveyor_app(self) -> Iterator[Conveyor]:
        app = Conveyor("memory://my-app")

        @app.task("hello")
        def hello(payload: None) -> str:
            return "hello"

        yield app
        app.close()

    def test_it(self, conveyor_app: Conveyor, conveyor_queue: QueueHelpers) -> None:
        conveyor_app.enqueue("hello")
        conveyor_queue.assert_queued("hello", 1)
        (attempt,) = conveyor_queue.drain()
        assert attempt.result == "hello"
