"""Issue 12: an HTTP enqueue encodes its payload once. The route checks the payload (400/413 before any store call)
and hands the encoding on as a `CheckedJSON`, which enqueue keeps instead of encoding the payload again."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import model
from conveyor.model import text as model_text
from tests.server.conftest import LiveServer

PAYLOAD = {"item": "sword", "n": 1, "tags": ["a", "b"]}


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every payload model_text._encode_json is given while the test runs (the server runs in this process)."""
    seen: list[Any] = []
    original = model_text._encode_json  # noqa: SLF001 - the one encoder every payload goes through is what is counted

    def counting(payload: Any) -> str:
        seen.append(payload)
        return original(payload)

    monkeypatch.setattr(model_text, "_encode_json", counting)
    return seen


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/jobs", {"task": "t", "payload": PAYLOAD}),
        ("/api/jobs/enqueue", {"topic": "t", "payload": PAYLOAD}),
        ("/api/v1/namespaces/default/users/u1/jobs", {"jobs": [{"task": "t", "payload": PAYLOAD}]}),
    ],
)
def test_an_http_enqueue_encodes_its_payload_once(
    server: LiveServer, encodes: list[Any], path: str, body: dict[str, Any]
) -> None:
    answer = server.admin.post(path, json=body)
    assert answer.status_code in (200, 201), answer.text
    assert [p for p in encodes if p == PAYLOAD] == [PAYLOAD]
    job_id = (answer.json().get("items") or [answer.json()])[0]["id"]
    job = server.admin.get(f"/api/v1/jobs/{job_id}").json()
    assert job["payload"] == PAYLOAD


def test_a_batch_encodes_each_payload_once(server: LiveServer, encodes: list[Any]) -> None:
    payloads = [{"n": i} for i in range(5)]
    answer = server.admin.post("/api/v1/jobs/batch", json=[{"task": "t", "payload": p} for p in payloads])
    assert answer.status_code == 201, answer.text
    assert sorted((p for p in encodes if p in payloads), key=lambda p: p["n"]) == payloads


def test_checked_json_keeps_the_value_and_its_encoding() -> None:
    checked = model.CheckedJSON.encode(PAYLOAD)
    job = model.NewJob.build("t", checked)
    assert job.payload == PAYLOAD
    assert job.payload_json == checked.text == model.encode_payload(PAYLOAD)
