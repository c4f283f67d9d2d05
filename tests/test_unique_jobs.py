"""Unique jobs with a period and states through the public surfaces: `enqueue`/`enqueue_many`'s typed `unique=`
option, a task's default rule, and `/api/v1` (the duplicate answered with the existing job and `duplicate: true`,
a bad rule refused naming the field). The stores' side is the conformance suite (test_store_unique.py)."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, EnqueueSpec, UniqueOptions, ValidationError


def test_enqueue_and_enqueue_many_take_unique() -> None:
    app = Conveyor("memory://unique-api")
    rule: UniqueOptions = {"by": ["task", "user"], "period": 3600, "replace": ["payload"]}
    first = app.enqueue("grant", {"item": 1}, user_id="p1", unique=rule)
    again = app.enqueue("grant", {"item": 2}, user_id="p1", unique=rule)
    assert again.duplicate and again.id == first.id and again.payload == {"item": 2}
    batch = app.enqueue_many(
        [
            EnqueueSpec("grant", {"item": 3}, user_id="p2", unique=rule),
            {"task": "grant", "payload": {"item": 4}, "user_id": "p2", "unique": rule},
            EnqueueSpec("grant", {"item": 5}, user_id="p1", unique=True),
        ]
    )
    assert [j.duplicate for j in batch] == [False, True, False]
    assert batch[1].id == batch[0].id and batch[1].payload == {"item": 4}
    with pytest.raises(ValidationError) as info:
        app.enqueue("grant", {}, unique={"period": -1})
    assert info.value.field == "unique.period"
    with pytest.raises(ValidationError) as info:
        app.enqueue("grant", {}, unique={"bye": ["task"]})  # type: ignore[typeddict-unknown-key]
    assert info.value.field == "unique.bye"


def test_a_tasks_rule_is_the_default_of_its_jobs() -> None:
    app = Conveyor("memory://unique-task")

    @app.task("daily", unique={"by": ["task"], "period": 86400})
    def daily(payload: object) -> None: ...

    first = app.enqueue("daily", 1)
    assert app.enqueue("daily", 2).id == first.id
    assert not app.enqueue("daily", 3, unique=False).duplicate  # the enqueue drops the task's rule
    assert not app.enqueue("daily", 4, unique_key="k").duplicate  # a unique_key stands instead of it
    with pytest.raises(ValidationError) as info:
        app.task("bad", unique={"states": ["completed"]})(daily)
    assert info.value.field == "unique.states"
