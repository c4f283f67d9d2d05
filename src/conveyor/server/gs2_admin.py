"""Conveyor's own admin API for the GS2 features, under `/api/v1/gs2/...` and `/api/v1/users/{user_id}/data`
(admin token only; Conveyor's error format): signing keys, issuing stamp sheets, stamp tasks and signed login
bodies, and a user's data (dump, clean, import) — the same operations as `conveyor gs2 ...` and
`conveyor users ...`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor.server.common import ERROR_RESPONSES
from conveyor.server.deps import ServerContext, get_context
from conveyor.server.gs2_auth import issue_login_body
from conveyor.server.gs2_keys import create_key, delete_key, get_key, list_keys, rotate_key
from conveyor.server.gs2_models import Grn
from conveyor.server.gs2_stamp import DEFAULT_EXPIRES_IN, issue_delete_task, issue_push_sheet
from conveyor.userdata import clean_user, dump_user, import_user


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="1-128 characters of [A-Za-z0-9-_.], unique on the store")
    namespace: str | None = Field(None, description="Limit the key to one namespace (default: any)")
    description: str = Field("", max_length=1024)


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_previous_for: float = Field(86400.0, ge=0, le=366 * 86400, description="Seconds older versions verify")


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(..., min_length=1, max_length=1024)
    expires_in: float = Field(600.0, gt=0, le=86400)


class StampSheetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(..., description="Name of the signing key")
    namespace: str
    user_id: str = Field(..., min_length=1, max_length=1024)
    jobs: list[dict[str, Any]] = Field(..., description="GS2 JobEntry objects: scriptId, args (JSON text), maxTryCount")
    expires_in: float = Field(DEFAULT_EXPIRES_IN, gt=0, le=30 * 86400)


class StampTaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    namespace: str
    user_id: str = Field(..., min_length=1, max_length=1024)
    job_name: str = Field(..., description="The job's id")
    expires_in: float = Field(DEFAULT_EXPIRES_IN, gt=0, le=30 * 86400)


def build_admin_router(grn: Grn) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)  # admin only: conveyor.server.access
    tags: list[str | Any] = ["gs2"]

    @router.get("/gs2/keys", tags=tags, summary="List signing keys")
    async def keys(ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        return JSONResponse({"items": [k.describe(grn) for k in await list_keys(ctx.app)]})

    @router.post("/gs2/keys", tags=tags, status_code=201, summary="Create a signing key")
    async def new_key(body: KeyBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        key = await create_key(ctx.app, body.name, namespace=body.namespace, description=body.description)
        return JSONResponse(key.describe(grn), status_code=201)

    @router.get("/gs2/keys/{name}", tags=tags, summary="Get a signing key")
    async def one_key(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        return JSONResponse((await get_key(ctx.app, name)).describe(grn))

    @router.post("/gs2/keys/{name}/rotate", tags=tags, summary="Rotate a signing key")
    async def rotate(name: str, body: RotateBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        key = await rotate_key(ctx.app, name, keep_previous_for=body.keep_previous_for)
        return JSONResponse(key.describe(grn))

    @router.delete("/gs2/keys/{name}", tags=tags, summary="Delete a signing key")
    async def remove_key(name: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        await delete_key(ctx.app, name)
        return JSONResponse({"ok": True})

    @router.post("/gs2/keys/{name}/login-body", tags=tags, summary="Sign a login body (login_by_signature)")
    async def login_body(name: str, body: LoginBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        signed = await issue_login_body(ctx.app, grn, key=name, user_id=body.user_id, expires_in=body.expires_in)
        return JSONResponse(signed)

    @router.post("/gs2/stamp-sheets", tags=tags, status_code=201, summary="Issue a push stamp sheet")
    async def stamp_sheet(body: StampSheetBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        issued = await issue_push_sheet(
            ctx.app, grn, key=body.key, namespace=body.namespace, user_id=body.user_id, jobs=body.jobs,
            expires_in=body.expires_in,
        )  # fmt: skip
        answer = {"stampSheet": issued.text, "keyId": issued.key_id, "sheetRequestId": issued.request_id}
        return JSONResponse({**answer, "expiresAt": issued.expires_at}, status_code=201)

    @router.post("/gs2/stamp-tasks", tags=tags, status_code=201, summary="Issue a delete-job stamp task")
    async def stamp_task(body: StampTaskBody, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        issued = await issue_delete_task(
            ctx.app, grn, key=body.key, namespace=body.namespace, user_id=body.user_id, job_name=body.job_name,
            expires_in=body.expires_in,
        )  # fmt: skip
        answer = {"stampTask": issued.text, "keyId": issued.key_id, "taskId": issued.request_id}
        return JSONResponse({**answer, "expiresAt": issued.expires_at}, status_code=201)

    @router.get("/users/{user_id}/data", tags=["users"], summary="Dump a user's data")
    async def dump(user_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        return JSONResponse(await dump_user(ctx.app, user_id))

    @router.delete("/users/{user_id}/data", tags=["users"], summary="Delete a user's data")
    async def clean(user_id: str, ctx: ServerContext = Depends(get_context)) -> JSONResponse:
        return JSONResponse({"deleted": await clean_user(ctx.app, user_id)})

    @router.post("/users/{user_id}/data", tags=["users"], summary="Import a user's data dump")
    async def restore(
        user_id: str, document: dict[str, Any], ctx: ServerContext = Depends(get_context)
    ) -> JSONResponse:
        return JSONResponse(await import_user(ctx.app, user_id, document))

    return router
