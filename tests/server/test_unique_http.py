"""`unique` on /api/v1 enqueues: the duplicate is answered with the existing job and `duplicate: true` (as for
unique_key), and a bad rule is refused naming the field."""

from __future__ import annotations

import pytest

from tests.server.conftest import LiveServer


def test_http_enqueue_answers_the_existing_job(server: LiveServer) -> None:
    admin = server.admin
    body = {"task": "echo", "payload": {"day": 1, "n": 1}, "unique": {"fields": ["day"], "period": 86400}}
    r = admin.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["duplicate"] is False
    r = admin.post("/api/v1/jobs", json={**body, "payload": {"day": 1, "n": 2}})
    assert r.json()["id"] == first["id"] and r.json()["duplicate"] is True and r.json()["payload"]["n"] == 1
    r = admin.post("/api/v1/jobs", json={"task": "echo", "payload": 5, "unique": True})
    assert r.status_code == 201 and r.json()["duplicate"] is False
    r = admin.post("/api/v1/jobs/batch", json=[{"task": "echo", "payload": 5, "unique": True}, body])
    assert [j["duplicate"] for j in r.json()["items"]] == [True, True]


@pytest.mark.parametrize(
    ("unique", "field"),
    [
        ({"period": -5}, "unique.period"),
        ({"states": ["done"]}, "unique.states.0"),
        ({"by": []}, "unique.by"),
        ({"replace": ["queue"]}, "unique.replace.0"),
        ({"colour": 1}, "unique.colour"),
        ("yes", "unique"),
    ],
)
def test_http_validation_names_the_field(server: LiveServer, unique: object, field: str) -> None:
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "unique": unique})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field.split(".0")[0]), r.json()


def test_http_rules_the_model_checks_name_the_field(server: LiveServer) -> None:
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "unique": {"states": ["pending", "completed"]}})
    assert r.status_code in (400, 422) and r.json()["field"] == "unique.states"
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "payload": [1], "unique": {"fields": ["a"]}})
    assert r.status_code in (400, 422) and r.json()["field"] == "unique.fields"
    r = server.admin.post("/api/v1/jobs", json={"task": "echo", "unique_key": "k", "unique": True})
    assert r.status_code in (400, 422) and r.json()["field"] == "unique"
