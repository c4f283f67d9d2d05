"""GS2 transaction actions: signed stamp sheets that push jobs and stamp tasks that delete one, each exactly once.

GS2's overview offers "job registration as a transaction action" (acquire action `Gs2JobQueue:PushByUserId`,
consume action `Gs2JobQueue:DeleteJobByUserId`). Here an admin (or a trusted service holding the admin token)
*issues* a sheet — `POST /api/v1/gs2/stamp-sheets` or `conveyor gs2 stamp-sheet` — signed with a Conveyor signing
key (`gs2_keys`); whoever holds it may later *execute* it with the SDK's `push_by_stamp_sheet` (or a task with
`delete_by_stamp_task`). The sheet's signature is its authority; its expiry bounds its life.

Wire format, as GS2's SDKs read it: a sheet is the JSON text `{"body": "<JSON text>", "signature": "<base64>"}`;
the body holds `sheetRequestId`, `action`, `args` (the action's request as JSON text), `tasks` (here always
empty), `keyId`, `userId`, `timestamp` and `expiresAt` (Unix ms). A stamp task has the same envelope with
`taskId` instead of `sheetRequestId`.

Exactly once: the first execution reserves `gs2:stamp:{id}` in the store's kv space (atomic only-if-absent) with
the job ids it is about to push, pushes them with those ids and a unique key per entry, then stores its answer. A
replay returns the stored answer. A replay that finds only the reservation (the first request is still running,
or its process died before storing the answer) pushes the same ids with the same unique keys, which the store
turns into the existing jobs rather than new ones, and finds them by id if they already ran. Deletion reserves
the job as it was before deleting it, so every replay answers with that same job. Records live until the sheet
expires plus a day.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, JobNotFound, NotFound, ValidationError
from conveyor.ids import new_job_ids
from conveyor.model import JSON, Job, RawJSON, validate_name
from conveyor.server.gs2_keys import KeyNotFound, SigningKey, get_key, now_ms
from conveyor.server.gs2_models import Grn, GS2Error, check_user_id, job_to_gs2, parse_job_entries

if TYPE_CHECKING:
    from conveyor.app import Conveyor

PUSH_ACTION = "Gs2JobQueue:PushByUserId"
DELETE_ACTION = "Gs2JobQueue:DeleteJobByUserId"
DEFAULT_EXPIRES_IN = 3600.0
MAX_EXPIRES_IN = 30 * 86400.0
RECORD_MARGIN = 86400.0
MAX_SHEET_CHARS = 2 * 1024 * 1024


# ---- issuing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    text: str
    """The signed sheet or task: what `push_by_stamp_sheet` / `delete_by_stamp_task` take."""
    key_id: str
    request_id: str
    expires_at: int


def _expiry(expires_in: float) -> int:
    if not 0 < expires_in <= MAX_EXPIRES_IN:
        raise ValidationError(
            f"expires_in must be more than 0 and at most {int(MAX_EXPIRES_IN)} seconds, got {expires_in!r}",
            field="expires_in",
        )
    return now_ms() + int(expires_in * 1000)


def _check_scope(key: SigningKey, namespace: str) -> None:
    if key.namespace is not None and key.namespace != namespace:
        raise ValidationError(
            f"signing key {key.name!r} is limited to namespace {key.namespace!r}, not {namespace!r}", field="key"
        )


def _envelope(key: SigningKey, body: dict[str, JSON]) -> str:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"body": text, "signature": key.sign(text)}, separators=(",", ":"), ensure_ascii=False)


async def issue_push_sheet(
    app: Conveyor,
    grn: Grn,
    *,
    key: str,
    namespace: str,
    user_id: str,
    jobs: Sequence[Mapping[str, Any]],
    expires_in: float = DEFAULT_EXPIRES_IN,
) -> Issued:
    """A signed sheet that pushes `jobs` (GS2 JobEntry objects: scriptId, args, maxTryCount) to the user's queue."""
    validate_name(namespace, "namespace")
    _check_user(user_id)
    try:
        parse_job_entries({"jobs": jobs})  # the same rules as the push itself: never issue a sheet that fails
    except GS2Error as exc:
        raise ValidationError(exc.message, field="jobs") from None
    signing = await get_key(app, key)
    _check_scope(signing, namespace)
    request_id = str(uuid.uuid4())
    expires_at = _expiry(expires_in)
    args = {"namespaceName": namespace, "userId": user_id, "jobs": [dict(j) for j in jobs]}
    body: dict[str, JSON] = {
        "sheetRequestId": request_id,
        "action": PUSH_ACTION,
        "args": json.dumps(args, separators=(",", ":"), ensure_ascii=False),
        "tasks": [],
        "keyId": signing.key_id(grn),
        "userId": user_id,
        "timestamp": now_ms(),
        "expiresAt": expires_at,
    }
    return Issued(_envelope(signing, body), signing.key_id(grn), request_id, expires_at)


async def issue_delete_task(
    app: Conveyor,
    grn: Grn,
    *,
    key: str,
    namespace: str,
    user_id: str,
    job_name: str,
    expires_in: float = DEFAULT_EXPIRES_IN,
) -> Issued:
    """A signed stamp task that deletes the user's job `job_name` (whatever its state, as GS2 does)."""
    validate_name(namespace, "namespace")
    _check_user(user_id)
    _check_job_name(job_name)
    signing = await get_key(app, key)
    _check_scope(signing, namespace)
    task_id = str(uuid.uuid4())
    expires_at = _expiry(expires_in)
    args = {"namespaceName": namespace, "userId": user_id, "jobName": job_name}
    body: dict[str, JSON] = {
        "taskId": task_id,
        "action": DELETE_ACTION,
        "args": json.dumps(args, separators=(",", ":"), ensure_ascii=False),
        "keyId": signing.key_id(grn),
        "userId": user_id,
        "timestamp": now_ms(),
        "expiresAt": expires_at,
    }
    return Issued(_envelope(signing, body), signing.key_id(grn), task_id, expires_at)


def _check_user(user_id: object) -> None:
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise ValidationError("user_id must be 1 to 1024 characters without NUL", field="user_id")


def _check_job_name(name: object) -> None:
    try:
        uuid.UUID(str(name))
    except ValueError:
        raise ValidationError(f"job name must be a job id (a UUID), got {name!r}", field="job_name") from None


# ---- verifying -------------------------------------------------------------------------------------------------


def _invalid(component: str, message: str, what: str = "invalid") -> GS2Error:
    return GS2Error(400, component, message, f"jobQueue.{component}.error.{what}")


async def verify(app: Conveyor, grn: Grn, text: object, key_id: object, component: str, action: str) -> dict[str, Any]:
    """The sheet's (or task's) body once signature, key, action and expiry check out; else GS2's 400 error."""
    if not isinstance(text, str) or not text or len(text) > MAX_SHEET_CHARS:
        raise _invalid(component, f"{component} is required (the signed text Conveyor issued)", "required")
    if not isinstance(key_id, str) or not key_id:
        raise _invalid("keyId", "keyId is required (the GRN of the signing key)", "required")
    try:
        envelope = json.loads(text)
        body_text, signature = envelope["body"], envelope["signature"]
        if not isinstance(body_text, str) or not isinstance(signature, str):
            raise TypeError("body and signature must be strings")
    except (ValueError, KeyError, TypeError, RecursionError):
        raise _invalid(component, f"{component} is not a signed GS2 document ({{body, signature}})") from None
    _, name = grn.parse_key(key_id)
    try:
        key = await get_key(app, name)
    except KeyNotFound:
        raise _invalid("keyId", f"no signing key {key_id}", "notFound") from None
    if key.key_id(grn) != key_id:
        raise _invalid("keyId", f"keyId {key_id} does not name a key of this server", "notFound")
    if not key.verify(body_text, signature):
        raise _invalid(component, f"the {component} signature does not verify: tampered, or signed by another key")
    try:
        body = json.loads(body_text)
        args = json.loads(body["args"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise _invalid(component, f"the {component} body is not one Conveyor issued") from None
    if not isinstance(body, dict) or not isinstance(args, dict):
        raise _invalid(component, f"the {component} body is not one Conveyor issued")
    if body.get("keyId") != key_id:
        raise _invalid("keyId", f"keyId does not match the key that signed the {component}")
    if body.get("action") != action:
        raise _invalid(component, f"the {component} is for {body.get('action')!r}, not {action!r}", "action")
    expires = body.get("expiresAt")
    if not isinstance(expires, int) or expires <= now_ms():
        raise _invalid(component, f"the {component} has expired; issue a new one", "expired")
    namespace = args.get("namespaceName")
    if key.namespace is not None and namespace != key.namespace:
        raise _invalid(component, f"signing key {key.name!r} may not act on namespace {namespace!r}")
    body["_args"] = args
    return body


# ---- executing exactly once ---------------------------------------------------------------------------------------


def _record_key(request_id: str) -> str:
    return f"gs2:stamp:{request_id}"


def _record_ttl(body: Mapping[str, Any]) -> float:
    return max(60.0, (int(body["expiresAt"]) - now_ms()) / 1000) + RECORD_MARGIN


async def push_by_sheet(app: Conveyor, grn: Grn, sheet: object, key_id: object) -> dict[str, JSON]:
    """`POST /job-queue/stamp/job`: `{items, autoRun}`, the same answer for every replay of the sheet."""
    body = await verify(app, grn, sheet, key_id, "stampSheet", PUSH_ACTION)
    args = body["_args"]
    request_id = body.get("sheetRequestId")
    if not isinstance(request_id, str) or not request_id:
        raise _invalid("stampSheet", "the stampSheet has no sheetRequestId")
    namespace, user_id = args.get("namespaceName"), args.get("userId")
    try:
        validate_name(namespace, "namespaceName")
        assert isinstance(user_id, str)
        check_user_id(user_id)
    except (ConveyorError, AssertionError):
        raise _invalid("stampSheet", "the stampSheet names no valid namespace and user") from None
    entries = parse_job_entries(args)
    try:
        ns = await app.aget_namespace(namespace)
    except NotFound:
        raise GS2Error(
            404, "namespace", f"namespace not found: {namespace}", "jobQueue.namespace.error.notFound"
        ) from None
    key = _record_key(request_id)
    ttl = _record_ttl(body)
    ids = new_job_ids(len(entries))
    reservation = json.dumps({"state": "pending", "ids": ids})
    text, reserved = await app.akv_setdefault(key, reservation, ttl=ttl)  # reserve, or read who did, in one step
    if not reserved:
        stored = json.loads(text)
        if stored.get("state") == "done":
            answer: dict[str, JSON] = stored["answer"]
            return answer
        ids = list(stored["ids"])
    unique = [f"gs2:stamp:{request_id}:{i}" for i in range(len(entries))]
    found = [await app.aget_job(job_id) for job_id in ids]
    if all(job is not None for job in found):
        jobs = [job for job in found if job is not None]
    else:
        specs = [
            {
                "task": e.script_id,
                "payload": RawJSON(e.args),
                "namespace": namespace,
                "user_id": user_id,
                "max_attempts": e.max_try_count,
                "unique_key": unique[i],
                "job_id": ids[i],
            }
            for i, e in enumerate(entries)
        ]
        try:
            pushed = await app.aenqueue_many(specs)
        except ValidationError as exc:
            if exc.field != "id":  # the sheet itself is refused: nothing was stored, so nothing stays reserved
                await app.akv_delete(key)
                raise
            pushed = []  # an id exists already: a concurrent replay pushed them first
        jobs = []
        for i, job in enumerate(pushed or [None] * len(ids)):  # type: ignore[list-item]
            current = await app.aget_job(ids[i] if job is None else job.id)
            if current is None:
                raise GS2Error(
                    409, "stampSheet", "the stampSheet is being executed; retry", "jobQueue.stampSheet.error.inProgress"
                )
            jobs.append(current)
    answer = {"items": [job_to_gs2(j, grn) for j in jobs], "autoRun": ns.auto_run}
    await app.akv_set(key, json.dumps({"state": "done", "answer": answer}), ttl=ttl)
    return answer


async def delete_by_task(
    app: Conveyor, grn: Grn, task: object, key_id: object, context_stack: object
) -> dict[str, JSON]:
    """`POST /job-queue/stamp/job/delete`: `{item, newContextStack}`; every replay answers with the same job."""
    body = await verify(app, grn, task, key_id, "stampTask", DELETE_ACTION)
    args = body["_args"]
    task_id = body.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise _invalid("stampTask", "the stampTask has no taskId")
    namespace, user_id, name = args.get("namespaceName"), args.get("userId"), args.get("jobName")
    key = _record_key(task_id)
    ttl = _record_ttl(body)
    raw = await app.akv_get(key)
    stored = json.loads(raw) if raw else None
    if stored is not None and stored.get("state") == "done":
        done: dict[str, JSON] = stored["answer"]
        return done
    item: JSON
    if stored is None:
        job = await _user_job(app, namespace, user_id, name)
        item = job_to_gs2(job, grn)
        text, reserved = await app.akv_setdefault(key, json.dumps({"state": "pending", "item": item}), ttl=ttl)
        if not reserved:
            stored = json.loads(text)
            if stored.get("state") == "done":
                again: dict[str, JSON] = stored["answer"]
                return again
            item = stored.get("item", item)
    else:
        item = stored["item"]
    try:
        await app.adelete(str(name), force=True)
    except JobNotFound:
        pass  # deleted by the first execution (or by someone else) already: the answer is the job as it was
    answer: dict[str, JSON] = {"item": item, "newContextStack": _context_stack(context_stack, task_id)}
    await app.akv_set(key, json.dumps({"state": "done", "answer": answer}), ttl=ttl)
    return answer


def _context_stack(previous: object, task_id: str) -> str:
    """GS2 chains tasks through an opaque context stack; Conveyor's records the stamp tasks it executed."""
    done: list[str] = []
    if isinstance(previous, str) and previous:
        try:
            loaded = json.loads(previous)
            if isinstance(loaded, dict) and isinstance(loaded.get("stampTaskIds"), list):
                done = [str(t) for t in loaded["stampTaskIds"]]
        except ValueError:
            pass
    return json.dumps({"stampTaskIds": [*done, task_id]}, separators=(",", ":"))


async def _user_job(app: Conveyor, namespace: object, user_id: object, name: object) -> Job:
    job = None
    try:
        uuid.UUID(str(name))
        job = await app.aget_job(str(name))
    except ValueError:
        pass
    if job is None or job.namespace != namespace or job.user_id != user_id:
        raise GS2Error(404, "job", f"job not found: {name}", "jobQueue.job.error.notFound")
    return job
