"""GS2-JobQueue wire shapes: Conveyor's jobs, attempts and namespaces as the `gs2` SDK's JSON, and GS2's errors.

Pure functions only (no I/O), so the mapping can be read and tested on its own. The field names, units and GRN
layouts are those of the official `gs2` Python SDK 1.1.255 (`gs2/job_queue/model.py`) and of
`/work/shared/reference/seed-systems.md` §1.2:

* GS2 `name` is Conveyor's job id (a UUID) and `jobId` the job's GRN;
* `scriptId` is the task name, `args` the payload as a JSON string;
* times are Unix milliseconds;
* every attempt (Conveyor `Attempt`) is one GS2 `JobResultBody`/`JobResult`, `tryNumber` being its try number.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.errors import ValidationError
from conveyor.model import JSON, Attempt, Job, JobStatus, Namespace, is_reserved_task, loads_json, text_problem

MAX_PUSH_ENTRIES = 10
"""GS2 PushByUserId takes 1–10 JobEntries per call."""
MAX_ARGS_CHARS = 131_072
"""GS2 JobEntry.args limit: 128 KiB of characters."""
DEFAULT_MAX_TRY_COUNT = 3
MAX_TRY_COUNT = 100
MAX_SCRIPT_ID = 1024
DEFAULT_PAGE_LIMIT = 30
MAX_PAGE_LIMIT = 1000
CONFLICT_MESSAGE = "Job queue execution conflict. Retry required."
"""The exact text GS2 documents for Run's ConflictException."""

NAMESPACE_FIELDS_MAPPED = frozenset(
    {"name", "description", "enableAutoRun", "pushNotification", "runNotification", "contextStack"}
)
"""Request fields with a home in Conveyor's Namespace; every other one is kept verbatim in `extra`."""
NAMESPACE_ECHOED_EXTRAS = ("transactionSetting", "transactionSettingV2", "logSetting")


# ---- errors ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GS2ErrorItem:
    component: str
    message: str
    code: str


class GS2Error(Exception):
    """An error answered in GS2's format. The SDK picks its exception class from the HTTP status alone
    (400 BadRequest, 401 Unauthorized, 404 NotFound, 409 Conflict, 503 ServiceUnavailable, ...) and parses
    `errors` from the body, so both must be right."""

    def __init__(self, status: int, component: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.items = [GS2ErrorItem(component, message, code or f"jobQueue.{component}.error")]

    @property
    def message(self) -> str:
        return self.items[0].message


def error_body(items: Sequence[GS2ErrorItem]) -> dict[str, str]:
    """GS2's error body: `message` is itself a JSON *string* holding a list of {component, message, code}
    (the SDK does `json.loads(json.loads(body)["message"])`)."""
    payload = [{"component": i.component, "message": i.message, "code": i.code} for i in items]
    return {"message": json.dumps(payload, ensure_ascii=False)}


# ---- ids and times -----------------------------------------------------------------------------------------------


def ms(value: datetime | None) -> int | None:
    """Unix milliseconds, GS2's unit for every timestamp."""
    return None if value is None else int(value.timestamp() * 1000)


DEFAULT_REGION = "ap-northeast-1"
DEFAULT_OWNER_ID = "conveyor"
REGION_ENV = "CONVEYOR_GS2_REGION"
OWNER_ID_ENV = "CONVEYOR_GS2_OWNER_ID"
_GRN_PART = re.compile(r"[A-Za-z0-9\-_.]{1,128}")


@dataclass(frozen=True, slots=True)
class ParsedGrn:
    """A GRN taken apart: `grn:gs2:{region}:{owner_id}:{service}:{path...}`."""

    region: str
    owner_id: str
    service: str
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Grn:
    """Builds and reads GS2 resource names for one deployment (`grn:gs2:{region}:{owner}:queue:...`).

    Region and owner id come from configuration (`conveyor serve --gs2-region/--gs2-owner-id`, or
    CONVEYOR_GS2_REGION / CONVEYOR_GS2_OWNER_ID), so every GRN Conveyor writes names this deployment and every
    GRN it is given back (a signing key's `keyId`) is checked against it."""

    region: str = DEFAULT_REGION
    owner_id: str = DEFAULT_OWNER_ID

    def __post_init__(self) -> None:
        for what, value in (("region", self.region), ("owner id", self.owner_id)):
            if not isinstance(value, str) or not _GRN_PART.fullmatch(value):
                raise ValueError(f"GS2 {what} must be 1-128 characters of letters, digits, '-', '_' or '.'")

    @classmethod
    def from_env(cls, region: str | None = None, owner_id: str | None = None) -> Grn:
        """Explicit values, else the environment, else the defaults."""
        return cls(
            region or os.environ.get(REGION_ENV) or DEFAULT_REGION,
            owner_id or os.environ.get(OWNER_ID_ENV) or DEFAULT_OWNER_ID,
        )

    def parse(self, grn: str, service: str, component: str = "grn") -> ParsedGrn:
        """Take a GRN of this deployment and `service` apart; a GS2Error (400) names what does not match."""
        parts = grn.split(":") if isinstance(grn, str) else []
        if len(parts) < 6 or parts[0] != "grn" or parts[1] != "gs2" or any(not p for p in parts):
            raise GS2Error(400, component, f"{component} is not a GRN (grn:gs2:region:owner:service:...)")
        parsed = ParsedGrn(parts[2], parts[3], parts[4], tuple(parts[5:]))
        if parsed.region != self.region or parsed.owner_id != self.owner_id:
            raise GS2Error(
                400,
                component,
                f"{component} names region {parsed.region!r} and owner {parsed.owner_id!r}; this server is region "
                f"{self.region!r}, owner {self.owner_id!r}",
            )
        if parsed.service != service:
            raise GS2Error(400, component, f"{component} names service {parsed.service!r}, not {service!r}")
        return parsed

    def key(self, key_namespace: str, name: str) -> str:
        """GS2-Key style `keyId` of a Conveyor signing key."""
        return f"grn:gs2:{self.region}:{self.owner_id}:key:{key_namespace}:key:{name}"

    def parse_key(self, key_id: str, component: str = "keyId") -> tuple[str, str]:
        """(key namespace, key name) of a `keyId` GRN of this deployment."""
        parsed = self.parse(key_id, "key", component)
        if len(parsed.path) != 3 or parsed.path[1] != "key":
            raise GS2Error(400, component, f"{component} is not a key GRN (grn:gs2:region:owner:key:NS:key:NAME)")
        return parsed.path[0], parsed.path[2]

    def namespace(self, ns: str) -> str:
        return f"grn:gs2:{self.region}:{self.owner_id}:queue:{ns}"

    def job(self, ns: str, user_id: str | None, name: str) -> str:
        return f"{self.namespace(ns)}:user:{user_id}:job:{name}"

    def job_result(self, ns: str, user_id: str | None, name: str, try_number: int) -> str:
        return f"{self.job(ns, user_id, name)}:jobResult:{try_number}"

    def dead_letter(self, ns: str, user_id: str | None, name: str) -> str:
        return f"{self.namespace(ns)}:user:{user_id}:dead:{name}"


# ---- jobs and results --------------------------------------------------------------------------------------------


def dump_json(value: JSON) -> str:
    """Compact JSON, as GS2 carries `args` and `result`: strings holding JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def current_retry_count(job: Job) -> int:
    """GS2 counts *failed* tries ("incremented each time execution results in a retryable error; when it
    reaches maxTryCount the job is permanently failed"). Conveyor's `attempts` counts every try, including
    one that is running or that succeeded, so those two states subtract the try that did not fail."""
    failed = job.attempts - (1 if job.status in (JobStatus.PROCESSING, JobStatus.COMPLETED) else 0)
    return max(0, min(failed, MAX_TRY_COUNT))


def args_text(job: Job) -> str:
    """GS2 `args`: the JSON text exactly as it was pushed (issue 11 §4), when the store read it back; else the
    payload's compact encoding (a job enqueued through Conveyor's own API with a value, not a string)."""
    return job.payload_json if job.payload_json is not None else dump_json(job.payload)


def job_to_gs2(job: Job, grn: Grn) -> dict[str, JSON]:
    return {
        "jobId": grn.job(job.namespace, job.user_id, job.id),
        "name": job.id,
        "userId": job.user_id,
        "scriptId": job.task,
        "args": args_text(job),
        "currentRetryCount": current_retry_count(job),
        "maxTryCount": job.max_attempts,
        "createdAt": ms(job.created),
        "updatedAt": ms(job.updated),
    }


def attempt_result_text(attempt: Attempt) -> str:
    """The JSON string GS2 puts in `result`: the handler's return value on success; on failure GS2 carries
    "error details", so a failed try without a result gives `{"error": ...}`."""
    if attempt.result is not None or attempt.error is None:
        return dump_json(attempt.result)
    return dump_json({"error": attempt.error})


def result_body_to_gs2(attempt: Attempt) -> dict[str, JSON]:
    """GS2 JobResultBody."""
    return {
        "tryNumber": attempt.try_number,
        "statusCode": attempt.status_code,
        "result": attempt_result_text(attempt),
        "tryAt": ms(attempt.started_at),
    }


def job_result_to_gs2(job: Job, attempt: Attempt, grn: Grn) -> dict[str, JSON]:
    """GS2 JobResult: the body plus the job it belongs to."""
    return {
        "jobResultId": grn.job_result(job.namespace, job.user_id, job.id, attempt.try_number),
        "jobId": grn.job(job.namespace, job.user_id, job.id),
        "scriptId": job.task,
        "args": args_text(job),
        **result_body_to_gs2(attempt),
    }


def dead_letter_to_gs2(job: Job, attempts: Sequence[Attempt], grn: Grn) -> dict[str, JSON]:
    """GS2 DeadLetterJob (SDKs 2022-08…2024-12): a failed job with every try's JobResultBody."""
    return {
        "deadLetterJobId": grn.dead_letter(job.namespace, job.user_id, job.id),
        "name": job.id,
        "userId": job.user_id,
        "scriptId": job.task,
        "args": args_text(job),
        "result": [result_body_to_gs2(a) for a in attempts],
        "createdAt": ms(job.created),
        "updatedAt": ms(job.updated),
    }


# ---- push input --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobEntry:
    """One validated GS2 JobEntry."""

    script_id: str
    payload: JSON
    max_try_count: int
    args: str
    """The `args` text as pushed: enqueued as `RawJSON(args)` so it reads back unchanged."""


def parse_job_entries(body: Mapping[str, Any]) -> list[JobEntry]:
    """Validate PushByUserId's `jobs`: 1–10 entries, `scriptId` required (≤ 1024 chars), `args` a JSON
    string ≤ 131 072 chars (default "{}"), `maxTryCount` 1–100 (default 3; GS2's JobEntry also allows 0,
    whose meaning is undocumented — it is read as "not given", the default)."""
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise GS2Error(400, "jobs", "jobs must be a list of 1 to 10 JobEntry objects", "jobQueue.jobs.error.required")
    if len(jobs) > MAX_PUSH_ENTRIES:
        raise GS2Error(
            400,
            "jobs",
            f"jobs has {len(jobs)} entries; push takes at most {MAX_PUSH_ENTRIES} per call",
            "jobQueue.jobs.error.tooMany",
        )
    return [_parse_entry(i, raw) for i, raw in enumerate(jobs)]


def _parse_entry(index: int, raw: object) -> JobEntry:
    where = f"jobs[{index}]"
    if not isinstance(raw, Mapping):
        raise GS2Error(400, "jobs", f"{where} must be an object", "jobQueue.jobs.error.invalid")
    script_id = raw.get("scriptId")
    if not isinstance(script_id, str) or not script_id.strip():
        raise GS2Error(400, "scriptId", f"{where}.scriptId is required", "jobQueue.scriptId.error.required")
    problem = text_problem(script_id)
    if problem is not None:
        raise GS2Error(400, "scriptId", f"{where}.scriptId {problem}", "jobQueue.scriptId.error.invalid")
    if is_reserved_task(script_id):
        raise GS2Error(
            400,
            "scriptId",
            f"{where}.scriptId {script_id!r} is reserved: names starting with 'conveyor:' are Conveyor's own jobs",
            "jobQueue.scriptId.error.reserved",
        )
    if len(script_id) > MAX_SCRIPT_ID:
        raise GS2Error(
            400,
            "scriptId",
            f"{where}.scriptId is {len(script_id)} characters; the limit is {MAX_SCRIPT_ID}",
            "jobQueue.scriptId.error.tooLong",
        )
    args = raw.get("args")
    if args is None:
        args = "{}"
    if not isinstance(args, str):
        raise GS2Error(400, "args", f"{where}.args must be a string holding JSON", "jobQueue.args.error.invalid")
    if len(args) > MAX_ARGS_CHARS:
        raise GS2Error(
            400,
            "args",
            f"{where}.args is {len(args)} characters; the limit is {MAX_ARGS_CHARS} (128 KiB)",
            "jobQueue.args.error.tooLong",
        )
    try:  # strict: no NaN, and no string a store cannot keep (NUL, lone surrogates)
        payload = loads_json(args, f"{where}.args")
    except ValidationError as exc:
        raise GS2Error(400, "args", exc.message, "jobQueue.args.error.invalid") from None
    count = raw.get("maxTryCount")
    if count is None or count == 0:
        count = DEFAULT_MAX_TRY_COUNT
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_TRY_COUNT:
        raise GS2Error(
            400,
            "maxTryCount",
            f"{where}.maxTryCount must be an integer from 0 to {MAX_TRY_COUNT}, got {count!r}",
            "jobQueue.maxTryCount.error.invalid",
        )
    return JobEntry(script_id, payload, count, args)


def check_user_id(user_id: str) -> None:
    """GS2 user ids are free-form; Conveyor needs 1–1024 characters without NUL (kept in text columns)."""
    if not 1 <= len(user_id) <= 1024 or text_problem(user_id) is not None:
        raise GS2Error(
            400,
            "userId",
            "userId must be 1 to 1024 characters of Unicode text without NUL",
            "jobQueue.userId.error.invalid",
        )


# ---- namespaces --------------------------------------------------------------------------------------------------


def notification_enabled(setting: JSON) -> bool:
    """A GS2 NotificationSetting turns Conveyor's flag on when it is given and not explicitly disabled
    (`enable: "Disabled"`); Conveyor delivers it as an SSE event/webhook instead of GS2-Gateway."""
    if not isinstance(setting, Mapping):
        return False
    enable = setting.get("enable")
    return not (isinstance(enable, str) and enable.lower() == "disabled")


def namespace_from_gs2(body: Mapping[str, Any], existing: Namespace | None, name: str) -> Namespace:
    """Apply a create (existing None) or update request. Fields absent from an update keep their value;
    GS2 settings that Conveyor has no use for (transactionSetting, logSetting, ...) live in `extra` verbatim,
    and so do the notification settings themselves, so every GS2 field reads back as it was written."""
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 1024):
        raise GS2Error(
            400, "description", "description must be a string of at most 1024 characters", "jobQueue.description.error"
        )
    auto_run = body.get("enableAutoRun")
    if auto_run is not None and not isinstance(auto_run, bool):
        raise GS2Error(400, "enableAutoRun", "enableAutoRun must be true or false", "jobQueue.enableAutoRun.error")
    extra: dict[str, JSON] = dict(existing.extra) if existing is not None else {}
    for key, value in body.items():
        if key in NAMESPACE_FIELDS_MAPPED:
            continue
        if value is None:
            continue
        extra[key] = value
    for key in ("pushNotification", "runNotification"):
        if key in body and body[key] is not None:
            if not isinstance(body[key], Mapping):
                raise GS2Error(400, key, f"{key} must be a NotificationSetting object", f"jobQueue.{key}.error")
            _check_notification_setting(key, body[key])
            extra[key] = dict(body[key])
    for key in ("transactionSetting", "transactionSettingV2", "logSetting"):
        if body.get(key) is not None and not isinstance(body[key], Mapping):
            raise GS2Error(400, key, f"{key} must be an object", f"jobQueue.{key}.error")
    if body.get("contextStack") is not None and not isinstance(body["contextStack"], str):
        raise GS2Error(400, "contextStack", "contextStack must be a string", "jobQueue.contextStack.error")
    if existing is None:
        return Namespace(
            name=name,
            description=description or "",
            auto_run=bool(auto_run),  # GS2's default for enableAutoRun is false
            push_notification=notification_enabled(extra.get("pushNotification")),
            run_notification=notification_enabled(extra.get("runNotification")),
            extra=extra,
        )
    from dataclasses import replace

    return replace(
        existing,
        description=existing.description if description is None else description,
        auto_run=existing.auto_run if auto_run is None else auto_run,
        push_notification=(
            notification_enabled(extra.get("pushNotification"))
            if body.get("pushNotification") is not None
            else existing.push_notification
        ),
        run_notification=(
            notification_enabled(extra.get("runNotification"))
            if body.get("runNotification") is not None
            else existing.run_notification
        ),
        extra=extra,
    )


_NOTIFICATION_TYPES: dict[str, type | tuple[type, ...]] = {
    "gatewayNamespaceId": str,
    "enableTransferMobileNotification": bool,
    "sound": str,
    "mobileNotificationMessages": list,
    "enable": str,
}
"""The field types of the SDK's NotificationSetting (gs2/job_queue/model.py): what it sends, nothing looser."""


def _check_notification_setting(key: str, setting: Mapping[str, Any]) -> None:
    for name, wanted in _NOTIFICATION_TYPES.items():
        value = setting.get(name)
        if value is not None and not isinstance(value, wanted):
            kind = "true or false" if wanted is bool else f"a {getattr(wanted, '__name__', 'value')}"
            raise GS2Error(400, key, f"{key}.{name} must be {kind}", f"jobQueue.{key}.error")
    enable = setting.get("enable")
    if enable is not None and enable not in ("Enabled", "Disabled"):
        raise GS2Error(400, key, f"{key}.enable must be 'Enabled' or 'Disabled'", f"jobQueue.{key}.error")


def namespace_to_gs2(ns: Namespace, grn: Grn) -> dict[str, JSON]:
    extra = dict(ns.extra)
    out: dict[str, JSON] = {
        "namespaceId": grn.namespace(ns.name),
        "name": ns.name,
        "description": ns.description or None,
        "enableAutoRun": ns.auto_run,
    }
    for key in NAMESPACE_ECHOED_EXTRAS:
        out[key] = extra.pop(key, None)
    for key, flag in (("pushNotification", ns.push_notification), ("runNotification", ns.run_notification)):
        setting = extra.pop(key, None)
        if setting is None and flag:
            setting = {"enable": "Enabled"}
        out[key] = setting
    out.update({k: v for k, v in extra.items() if k not in out})
    out["createdAt"] = ms(ns.created)
    out["updatedAt"] = ms(ns.updated)
    out["revision"] = ns.revision
    return out
