"""conveyor.codec: the one list of a job's (and an attempt's) fields, and the decoders generated from it."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from conveyor import codec
from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus, NewJob


def test_every_field_of_job_and_attempt_has_a_kind_in_dataclass_order() -> None:
    assert codec.column_names(codec.JOB_FIELDS) == tuple(f.name for f in dataclasses.fields(Job))
    assert codec.column_names(codec.ATTEMPT_FIELDS) == tuple(f.name for f in dataclasses.fields(Attempt))
    assert {f.name for f in codec.JOB_FIELDS if not f.stored} == {"duplicate", "payload_json"}
    kinds = {f.name: (f.kind, f.optional) for f in codec.JOB_FIELDS}
    assert kinds["status"] == ("status", False) and kinds["started_at"] == ("time", True)
    assert kinds["payload"] == ("json", False) and kinds["result"] == ("json", True)


def test_a_field_without_a_kind_fails_at_import_with_a_clear_error() -> None:
    @dataclasses.dataclass
    class Grown:
        id: str
        progress: float = 0.0

    with pytest.raises(TypeError, match=r"no kind for \['progress'\]"):
        codec._fields_of(Grown, {"id": "text"})  # noqa: SLF001 - what a new Job field without a kind would do
    with pytest.raises(TypeError, match=r"a kind for no field \['gone'\]"):
        codec._fields_of(Grown, {"id": "text", "progress": "int", "gone": "text"})  # noqa: SLF001


def _sample() -> Job:
    job = NewJob.build("task", {"n": 1}, user_id="u1", unique_key="k").to_job()
    now = datetime.now(UTC)
    return dataclasses.replace(job, status=JobStatus.PROCESSING, attempts=1, started_at=now, lease_token="t" * 32)


def test_row_decoder_reads_stored_fields_in_order_and_takes_the_rest_as_keywords() -> None:
    job = _sample()
    row = [getattr(job, f.name) for f in codec.STORED_JOB_FIELDS]
    row[codec.field_index(codec.STORED_JOB_FIELDS, "status")] = "processing"
    decode = codec.row_decoder(Job, codec.STORED_JOB_FIELDS, {"status": {s.value: s for s in JobStatus}})
    got = decode(row, payload_json=job.payload_json)
    assert got == job and got.status is JobStatus.PROCESSING
    assert decode(row, duplicate=True).duplicate is True and decode(row).payload_json is None
    assert "r[0]" in (decode.__doc__ or "")  # the generated source is on record


def test_row_decoder_converts_optional_fields_only_when_present() -> None:
    seen: list[int] = []

    def to_time(us: int) -> datetime:
        seen.append(us)
        return datetime.fromtimestamp(us / 1e6, UTC)

    fields = codec.STORED_ATTEMPT_FIELDS
    decode = codec.row_decoder(Attempt, fields, {"time": to_time, "outcome": AttemptOutcome, "json": json.loads})
    row = ["j", 1, "completed", 200, 1_000_000, 2_000_000, None, '{"a": 1}', None, None, "tok"]
    got = decode(row)
    assert got.result == {"a": 1} and got.outcome is AttemptOutcome.COMPLETED and got.duration == 1.0
    assert seen == [1_000_000, 2_000_000]
    row[7] = None
    assert decode(row).result is None


def test_mapping_decoder_gives_absent_fields_their_defaults() -> None:
    decode = codec.mapping_decoder(
        Job,
        (*codec.STORED_JOB_FIELDS, next(f for f in codec.JOB_FIELDS if f.name == "payload_json")),
        {"status": {s.value: s for s in JobStatus}, "int": int, "json": json.loads, "bool": lambda v: v == "1"},
        sources={"payload_json": "payload"},
    )
    now = datetime.now(UTC)
    h = {
        "id": "x",
        "namespace": "n",
        "queue": "q",
        "task": "t",
        "payload": '{"a":1}',
        "status": "pending",
        "priority": "0",
        "run_at": now,
        "attempts": "0",
        "max_attempts": "3",
        "try_number": "0",
        "created": now,
        "updated": now,
    }
    job = decode(h)
    assert (job.payload, job.payload_json, job.priority, job.user_id, job.cancel_requested) == (
        {"a": 1},
        '{"a":1}',
        0,
        None,
        False,
    )
    assert decode({**h, "cancel_requested": "1", "result": "[1]"}).result == [1]
    with pytest.raises(KeyError):
        decode({k: v for k, v in h.items() if k != "status"})  # a field without a default must be there


def test_copier_copies_every_field_into_a_new_object() -> None:
    job = _sample()
    clone = codec.copier(Job, overrides=("duplicate",))
    copy = clone(job)
    assert copy == job and copy is not job and copy.duplicate is False
    assert clone(job, duplicate=True).duplicate is True
    copy.status = JobStatus.FAILED
    assert job.status is JobStatus.PROCESSING
