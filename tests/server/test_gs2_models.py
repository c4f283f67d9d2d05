"""The GS2 wire mapping on its own: ids, counts, results, push validation, namespace settings, the error body."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from gs2.core.exception import BadRequestException
from gs2.job_queue.model import Job as SdkJob
from gs2.job_queue.model import JobResult as SdkJobResult
from gs2.job_queue.model import Namespace as SdkNamespace

from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus, Namespace
from conveyor.server.gs2_models import (
    Grn,
    GS2Error,
    current_retry_count,
    dead_letter_to_gs2,
    error_body,
    job_result_to_gs2,
    job_to_gs2,
    namespace_from_gs2,
    namespace_to_gs2,
    parse_job_entries,
)

GRN = Grn("ap-northeast-1", "owner-1")
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _job(status: JobStatus = JobStatus.PENDING, attempts: int = 0, **kw: object) -> Job:
    values: dict[str, object] = {
        "id": "0190f2a4-0000-7000-8000-000000000001",
        "namespace": "ns1",
        "queue": "default",
        "task": "grn:gs2:ap-northeast-1:owner-1:script:s:script:grant",
        "payload": {"item": "sword", "n": 1},
        "status": status,
        "priority": 0,
        "run_at": T0,
        "attempts": attempts,
        "max_attempts": 3,
        "try_number": attempts,
        "created": T0,
        "updated": T0,
        "user_id": "alice",
    }
    values.update(kw)
    return Job(**values)  # type: ignore[arg-type]


def _attempt(try_number: int, code: int, result: object = None, error: str | None = None) -> Attempt:
    outcome = AttemptOutcome.COMPLETED if code == 200 else AttemptOutcome.RETRY
    return Attempt("j", try_number, outcome, code, T0, T0, result=result, error=error)


def test_job_fields_round_trip_through_the_sdk_model() -> None:
    data = job_to_gs2(_job(), GRN)
    sdk = SdkJob.from_dict(data)
    assert sdk.to_dict() == data
    assert sdk.job_id == "grn:gs2:ap-northeast-1:owner-1:queue:ns1:user:alice:job:0190f2a4-0000-7000-8000-000000000001"
    assert json.loads(sdk.args) == {"item": "sword", "n": 1}
    assert sdk.created_at == 1767323045678


@pytest.mark.parametrize(
    ("status", "attempts", "expected"),
    [
        (JobStatus.PENDING, 0, 0),
        (JobStatus.PROCESSING, 1, 0),
        (JobStatus.COMPLETED, 1, 0),
        (JobStatus.PENDING, 1, 1),  # failed once, waiting for its retry
        (JobStatus.PROCESSING, 2, 1),
        (JobStatus.COMPLETED, 3, 2),
        (JobStatus.FAILED, 3, 3),  # reached maxTryCount: permanently failed
    ],
)
def test_current_retry_count_counts_failed_tries(status: JobStatus, attempts: int, expected: int) -> None:
    assert current_retry_count(_job(status, attempts)) == expected


def test_results_and_dead_letters() -> None:
    job = _job(JobStatus.FAILED, 2)
    failed = _attempt(1, 500, error="RuntimeError: down")
    with_result = _attempt(2, 503, result={"why": "busy"})
    data = job_result_to_gs2(job, failed, GRN)
    assert SdkJobResult.from_dict(data).to_dict() == data
    assert data["jobResultId"] == f"{data['jobId']}:jobResult:1"
    assert json.loads(str(data["result"])) == {"error": "RuntimeError: down"}
    dead = dead_letter_to_gs2(job, [failed, with_result], GRN)
    assert dead["deadLetterJobId"] == f"{GRN.namespace('ns1')}:user:alice:dead:{job.id}"
    assert [r["tryNumber"] for r in dead["result"]] == [1, 2]  # type: ignore[union-attr, index]
    assert json.loads(dead["result"][1]["result"]) == {"why": "busy"}  # type: ignore[index]


def test_push_validation() -> None:
    (entry,) = parse_job_entries({"jobs": [{"scriptId": "s", "args": None, "maxTryCount": None}]})
    assert (entry.payload, entry.max_try_count) == ({}, 3)  # GS2 defaults: args "{}", maxTryCount 3
    assert parse_job_entries({"jobs": [{"scriptId": "s", "maxTryCount": 0}]})[0].max_try_count == 3
    assert parse_job_entries({"jobs": [{"scriptId": "s", "maxTryCount": 100}]})[0].max_try_count == 100
    assert len(parse_job_entries({"jobs": [{"scriptId": "s"}] * 10})) == 10
    bad = [
        {},
        {"jobs": []},
        {"jobs": [{"scriptId": "s"}] * 11},
        {"jobs": [{"args": "{}"}]},
        {"jobs": [{"scriptId": "x" * 1025}]},
        {"jobs": [{"scriptId": "s", "args": "{not json"}]},
        {"jobs": [{"scriptId": "s", "args": {"a": 1}}]},
        {"jobs": [{"scriptId": "s", "args": json.dumps("y" * 131_071)}]},
        {"jobs": [{"scriptId": "s", "maxTryCount": 101}]},
        {"jobs": [{"scriptId": "s", "maxTryCount": True}]},
        {"jobs": ["nope"]},
        {"jobs": [{"scriptId": "s\x00"}]},
        {"jobs": [{"scriptId": "s", "args": json.dumps({"k": ["a\x00"]})}]},
        {"jobs": [{"scriptId": "s", "args": json.dumps({"k\x00": 1})}]},
    ]
    assert parse_job_entries({"jobs": [{"scriptId": "s", "args": json.dumps({"k": "\\u0000"})}]})[0].payload == {
        "k": "\\u0000"  # the six characters, not a NUL
    }
    for body in bad:
        with pytest.raises(GS2Error) as err:
            parse_job_entries(body)
        assert err.value.status == 400, body


def test_namespace_create_update_and_echo() -> None:
    body = {
        "name": "game",
        "description": "d",
        "transactionSetting": {"enableAutoRun": True, "keyId": "grn:key"},
        "logSetting": {"loggingNamespaceId": "grn:log"},
        "pushNotification": {"gatewayNamespaceId": "grn:gw", "enable": "Disabled"},
        "runNotification": {"gatewayNamespaceId": "grn:gw"},
        "contextStack": None,
    }
    ns = namespace_from_gs2(body, None, "game")
    assert ns.auto_run is False  # GS2 default
    assert ns.push_notification is False and ns.run_notification is True
    out = namespace_to_gs2(ns, GRN)
    sdk = SdkNamespace.from_dict(out)
    assert sdk.namespace_id == "grn:gs2:ap-northeast-1:owner-1:queue:game"
    assert sdk.transaction_setting.key_id == "grn:key"
    assert sdk.log_setting.logging_namespace_id == "grn:log"
    assert sdk.push_notification.enable == "Disabled"
    assert "contextStack" not in out

    updated = namespace_from_gs2({"enableAutoRun": True, "pushNotification": {"enable": "Enabled"}}, ns, "game")
    assert updated.auto_run is True and updated.push_notification is True
    assert updated.description == "d" and dict(updated.extra)["logSetting"] == {"loggingNamespaceId": "grn:log"}
    with pytest.raises(GS2Error):
        namespace_from_gs2({"enableAutoRun": "yes"}, ns, "game")
    with pytest.raises(GS2Error):
        namespace_from_gs2({"description": "x" * 1025}, None, "game")


def test_flags_without_settings_still_read_back() -> None:
    out = namespace_to_gs2(Namespace("plain", push_notification=True, auto_run=True), GRN)
    assert out["pushNotification"] == {"enable": "Enabled"}
    assert out["runNotification"] is None
    assert out["enableAutoRun"] is True


def test_error_body_is_what_the_sdk_parses() -> None:
    err = GS2Error(400, "jobs", "too many", "jobQueue.jobs.error.tooMany")
    body = json.dumps(error_body(err.items))
    parsed = BadRequestException(body)
    assert [(e.component, e.message, e.code) for e in parsed.errors] == [
        ("jobs", "too many", "jobQueue.jobs.error.tooMany")
    ]
