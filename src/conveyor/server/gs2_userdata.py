"""GS2 user data — dump, clean, import — under `/job-queue/system/...`, as the SDK's `*_user_data_by_user_id`
methods call them (admin token as project token). The document is `conveyor.userdata`'s.

GS2 runs these asynchronously and hands out pre-signed storage URLs; Conveyor does the work in the request and
serves the files itself at URLs signed with a secret kept in the store (valid one hour, usable without headers,
as a pre-signed URL is):

* `dump_user_data_by_user_id` snapshots the document into the store's kv space (kept 24 hours, so a dump taken
  before a clean stays downloadable); `check_dump_user_data_by_user_id` answers `{url}` to download it.
* `clean_user_data_by_user_id` deletes every job and attempt of the user atomically (`Store.delete_user_data`);
  `check_clean_user_data_by_user_id` answers `{}` once a clean has run (404 before).
* `prepare_import_user_data_by_user_id` answers `{uploadToken, uploadUrl}`; PUT the dump's JSON to `uploadUrl`;
  `import_user_data_by_user_id(uploadToken)` restores it (refusing another user's dump);
  `check_import_user_data_by_user_id` answers `{url}` of the import report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from conveyor.errors import ConveyorError
from conveyor.model import JSON
from conveyor.server.gs2_common import GS2Auth, json_body
from conveyor.server.gs2_models import Grn, GS2Error, check_user_id
from conveyor.userdata import clean_user, dump_user, import_user

if TYPE_CHECKING:
    from conveyor.app import Conveyor

KEEP = 24 * 3600.0
URL_LIFETIME = 3600
UPLOAD_LIFETIME = 3600.0
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
SECRET_KEY = "gs2:userdata:url-secret"


def _not_found(component: str, message: str) -> GS2Error:
    return GS2Error(404, component, message, f"jobQueue.{component}.error.notFound")


async def _secret(app: Conveyor) -> bytes:
    secret, _ = await app.akv_setdefault(SECRET_KEY, secrets.token_urlsafe(32))  # the first process's wins
    return secret.encode()


async def _signed_url(app: Conveyor, request: Request, path: str) -> str:
    expires = int(time.time()) + URL_LIFETIME
    signature = hmac.new(await _secret(app), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
    base = str(request.base_url).rstrip("/")
    return f"{base}{path}?expires={expires}&signature={signature}"


async def _check_signature(app: Conveyor, request: Request) -> None:
    path = request.url.path
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        raise _not_found("url", "this URL is not one Conveyor signed") from None
    expected = hmac.new(await _secret(app), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.query_params.get("signature", "")):
        raise _not_found("url", "this URL is not one Conveyor signed")
    if expires < time.time():
        raise _not_found("url", "this URL has expired; call the check method again for a new one")


@dataclass(frozen=True, slots=True)
class UserDataSource:
    """What a GS2 service dumps, cleans and restores of one user. The job queue's is `conveyor.userdata`'s (every
    job, attempt and dead letter); GS2-Gateway's is its own (`conveyor.server.gs2_gateway`). `restore` refuses a
    document of another user or service with a 400 `ConveyorError` before changing anything."""

    dump: Callable[[str], Awaitable[dict[str, JSON]]]
    clean: Callable[[str], Awaitable[Any]]
    restore: Callable[[str, Any], Awaitable[dict[str, JSON]]]


def add_user_data_routes(
    router: APIRouter, app: Conveyor, auth: GS2Auth, grn: Grn, *, service: str, source: UserDataSource | None = None
) -> None:
    """Add the user-data routes to a GS2 service router (before its catch-all). `source` says what the service's
    user data is (default: the user's jobs); each service keeps its dumps, cleans and uploads under its own keys."""
    prefix = router.prefix
    data = source or UserDataSource(
        lambda user_id: dump_user(app, user_id),
        lambda user_id: clean_user(app, user_id),
        lambda user_id, document: import_user(app, user_id, document),
    )
    kv = "gs2:userdata:" if service == "job-queue" else f"gs2:userdata:{service}:"

    def user(user_id: str) -> str:
        try:
            check_user_id(user_id)
        except GS2Error:
            raise
        return user_id

    async def dump(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        document = await _guard(data.dump(user(userId)))
        await app.akv_set(f"{kv}dump:{userId}", json.dumps(document, ensure_ascii=False), ttl=KEEP)
        return {}

    async def check_dump(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        if await app.akv_get(f"{kv}dump:{user(userId)}") is None:
            raise _not_found("dump", f"no dump of user {userId} (call dump_user_data_by_user_id first)")
        return {"url": await _signed_url(app, request, f"{prefix}/system/dump/user/{userId}/data")}

    async def download_dump(request: Request, userId: str) -> Response:  # noqa: N803
        await _check_signature(app, request)
        text = await app.akv_get(f"{kv}dump:{user(userId)}")
        if text is None:
            raise _not_found("dump", f"the dump of user {userId} is no longer kept; dump again")
        return Response(text, media_type="application/json")

    async def clean(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        deleted = await _guard(data.clean(user(userId)))
        record = json.dumps({"deleted": deleted, "at": time.time()})
        await app.akv_set(f"{kv}clean:{userId}", record, ttl=KEEP)
        return {}

    async def check_clean(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        if await app.akv_get(f"{kv}clean:{user(userId)}") is None:
            raise _not_found("clean", f"no clean of user {userId} was run (call clean_user_data_by_user_id)")
        return {}

    async def prepare_import(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        token = secrets.token_urlsafe(24)
        await app.akv_set(f"{kv}upload:{token}", json.dumps({"userId": user(userId)}), ttl=UPLOAD_LIFETIME)
        url = await _signed_url(app, request, f"{prefix}/system/import/user/{userId}/upload/{token}")
        return {"uploadToken": token, "uploadUrl": url}

    async def upload(request: Request, userId: str, uploadToken: str) -> Response:  # noqa: N803
        await _check_signature(app, request)
        await _upload_owner(app, kv, uploadToken, userId)
        raw = await request.body()
        if len(raw) > MAX_UPLOAD_BYTES:
            raise GS2Error(400, "body", f"an upload holds at most {MAX_UPLOAD_BYTES} bytes", "jobQueue.body.tooLarge")
        await app.akv_set(f"{kv}upload:{uploadToken}:data", raw.decode("utf-8", "replace"), ttl=KEEP)
        return JSONResponse({})

    async def run_import(request: Request, userId: str) -> dict[str, JSON]:  # noqa: N803
        body = await json_body(request)
        token = body.get("uploadToken")
        if not isinstance(token, str) or not token:
            raise GS2Error(400, "uploadToken", "uploadToken is required", "jobQueue.uploadToken.error.required")
        await _upload_owner(app, kv, token, user(userId))
        text = await app.akv_get(f"{kv}upload:{token}:data")
        if text is None:
            raise _not_found("upload", "nothing was uploaded with this token (PUT the dump to uploadUrl first)")
        try:
            document = json.loads(text)
        except ValueError:
            raise GS2Error(400, "upload", "the upload is not JSON", "jobQueue.upload.error.invalid") from None
        report = await _guard(data.restore(userId, document))
        await app.akv_set(f"{kv}import:{token}", json.dumps(report, ensure_ascii=False), ttl=KEEP)
        return {}

    async def check_import(request: Request, userId: str, uploadToken: str) -> dict[str, JSON]:  # noqa: N803
        await _upload_owner(app, kv, uploadToken, user(userId), kept=True)
        if await app.akv_get(f"{kv}import:{uploadToken}") is None:
            raise _not_found("import", "no import ran with this token (call import_user_data_by_user_id)")
        return {"url": await _signed_url(app, request, f"{prefix}/system/import/user/{userId}/{uploadToken}/report")}

    async def download_report(request: Request, userId: str, uploadToken: str) -> Response:  # noqa: N803
        await _check_signature(app, request)
        text = await app.akv_get(f"{kv}import:{uploadToken}")
        if text is None:
            raise _not_found("import", "the import report is no longer kept")
        return Response(text, media_type="application/json")

    add = router.add_api_route
    add("/system/dump/user/{userId}", dump, methods=["POST"])
    add("/system/dump/user/{userId}", check_dump, methods=["GET"])
    add("/system/dump/user/{userId}/data", download_dump, methods=["GET"])
    add("/system/clean/user/{userId}", clean, methods=["POST"])
    add("/system/clean/user/{userId}", check_clean, methods=["GET"])
    add("/system/import/user/{userId}/prepare", prepare_import, methods=["POST"])
    add("/system/import/user/{userId}/upload/{uploadToken}", upload, methods=["PUT"])
    add("/system/import/user/{userId}", run_import, methods=["POST"])
    add("/system/import/user/{userId}/{uploadToken}", check_import, methods=["GET"])
    add("/system/import/user/{userId}/{uploadToken}/report", download_report, methods=["GET"])


async def _upload_owner(app: Conveyor, kv: str, token: str, user_id: str, *, kept: bool = False) -> None:
    raw = await app.akv_get(f"{kv}upload:{token}")
    if raw is None and kept and await app.akv_get(f"{kv}import:{token}") is not None:
        return
    if raw is None or json.loads(raw).get("userId") != user_id:
        raise _not_found("uploadToken", "no such upload token for this user (prepare the import first)")


async def _guard(work: Any) -> Any:
    """The user-data module's validation errors in GS2's format (400 with the field)."""
    try:
        return await work
    except ConveyorError as exc:
        if exc.status_code in (400, 413, 422):
            component = getattr(exc, "field", None) or "userData"
            raise GS2Error(400, component, exc.message, f"jobQueue.{component}.error.invalid") from None
        raise
