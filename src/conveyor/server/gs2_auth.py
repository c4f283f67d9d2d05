"""GS2-Auth: the calls a game server uses to get a player's access token, served at `/auth/...`.

`Gs2AuthRestClient(session).login(LoginRequest().with_user_id(u))` with the admin token as project token answers
`{token, userId, expire}`: the token is a Conveyor user token for that user (`conveyor token USER` makes the same
kind), so the job-queue "Me" calls (`run`, `delete_job`, `get_job_result`) accept it as `X-GS2-ACCESS-TOKEN`.
`login_by_signature(keyId, body, signature)` needs no admin token: the signature is the credential. The body is
JSON with `userId` and an expiry (`expiresAt`, or `timestamp` no older than an hour), signed with a Conveyor
signing key — `conveyor gs2 sign-login USER --key NAME` or `POST /api/v1/gs2/keys/{name}/sign-login` make one,
as GS2-Account's authentication does in GS2. `federation` (admin) issues the target user's token. Time offsets
are not supported: Conveyor's due times follow the store's clock for every user alike.

Errors, unknown routes under `/auth/` included, are in GS2's format (the job-queue router's plumbing).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from conveyor.errors import ValidationError
from conveyor.model import JSON
from conveyor.server.gs2_common import (
    GS2_RESPONSES,
    GS2Auth,
    GS2Route,
    json_body,
    maybe_await,
    openapi_body,
    unsupported_route,
)
from conveyor.server.gs2_keys import KeyNotFound, get_key, now_ms
from conveyor.server.gs2_models import Grn, GS2Error
from conveyor.version import __version__

AUTH_PREFIX = "/auth"
DEFAULT_ACCESS_TOKEN_TTL = 3600.0
"""GS2 access tokens live an hour."""
MAX_SIGNED_BODY_AGE_MS = 3600 * 1000


def _error(status: int, component: str, message: str, code: str) -> GS2Error:
    return GS2Error(status, component, message, f"auth.{component}.error.{code}")


def _user_id(body: dict[str, Any], field: str = "userId") -> str:
    user_id = body.get(field)
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise _error(400, field, f"{field} must be 1 to 1024 characters without NUL", "invalid")
    return user_id


async def _token(auth: GS2Auth, user_id: str, ttl: float) -> dict[str, JSON]:
    issuer = getattr(auth, "issue", None)
    if issuer is None:
        raise _error(400, "auth", "this server's auth object cannot issue user tokens", "notSupported")
    issued = await maybe_await(issuer(user_id, ttl=ttl))
    return {"token": issued.token, "userId": user_id, "expire": int(issued.expires_at.timestamp() * 1000)}


def build_auth_router(
    conveyor_app: Any,
    auth: GS2Auth,
    grn: Grn,
    *,
    token_ttl: float = DEFAULT_ACCESS_TOKEN_TTL,
    prefix: str = AUTH_PREFIX,
) -> APIRouter:
    """GS2-Auth's REST surface (`login`, `login/signed`, `federation`, `timeoffset/token`, `system/version`)."""
    router = APIRouter(prefix=prefix, route_class=GS2Route, tags=["gs2"], responses=GS2_RESPONSES)

    async def login(request: Request) -> dict[str, JSON]:
        """GS2 Login: the admin token as project token issues `userId`'s access token."""
        body = await json_body(request)
        return await _token(auth, _user_id(body), token_ttl)

    async def login_by_signature(request: Request) -> dict[str, JSON]:
        """GS2 LoginBySignature: a body signed with a Conveyor signing key is the credential."""
        body = await json_body(request)
        key_id, text, signature = body.get("keyId"), body.get("body"), body.get("signature")
        for name, value in (("keyId", key_id), ("body", text), ("signature", signature)):
            if not isinstance(value, str) or not value:
                raise _error(400, name, f"{name} is required", "required")
        assert isinstance(key_id, str) and isinstance(text, str) and isinstance(signature, str)
        _, name = grn.parse_key(key_id)
        try:
            key = await get_key(conveyor_app, name)
        except KeyNotFound:
            raise _error(401, "keyId", f"no signing key {key_id}", "notFound") from None
        if key.key_id(grn) != key_id or not key.verify(text, signature):
            raise _error(401, "signature", "the signature does not verify with this key", "invalid")
        try:
            signed = json.loads(text)
        except ValueError:
            raise _error(400, "body", "body must be JSON text", "invalid") from None
        if not isinstance(signed, dict):
            raise _error(400, "body", "body must be a JSON object with userId", "invalid")
        now = now_ms()
        expires, stamp = signed.get("expiresAt"), signed.get("timestamp")
        if isinstance(expires, int) and not isinstance(expires, bool):
            if expires <= now:
                raise _error(401, "body", "the signed body has expired; sign a new one", "expired")
        elif isinstance(stamp, int) and not isinstance(stamp, bool):
            if not now - MAX_SIGNED_BODY_AGE_MS <= stamp <= now + 60_000:
                raise _error(401, "body", "the signed body's timestamp is more than an hour old", "expired")
        else:
            raise _error(400, "body", "the signed body needs expiresAt or timestamp (Unix ms)", "invalid")
        return await _token(auth, _user_id(signed), token_ttl)

    async def federation(request: Request) -> dict[str, JSON]:
        """GS2 Federation: the admin token issues `userId`'s token (policy documents are not enforced by Conveyor:
        a user token reaches its own user's jobs only, whatever the policy says)."""
        body = await json_body(request)
        _user_id(body, "originalUserId")
        return await _token(auth, _user_id(body), token_ttl)

    async def time_offset_token(request: Request) -> dict[str, JSON]:
        raise _error(
            400,
            "timeOffset",
            "Conveyor does not shift time per user: due times follow the store's clock for everyone, and "
            "X-GS2-TIME-OFFSET-TOKEN is accepted and ignored",
            "notSupported",
        )

    async def get_service_version(request: Request) -> dict[str, JSON]:
        return {"item": __version__}

    login_body = {"userId": {"type": "string"}, "timeOffset": {"type": "integer"}, "contextStack": {"type": "string"}}
    router.add_api_route("/login", login, methods=["POST"], openapi_extra=openapi_body(login_body, "userId"))
    signed_body = {"keyId": {"type": "string"}, "body": {"type": "string"}, "signature": {"type": "string"}}
    router.add_api_route(
        "/login/signed",
        login_by_signature,
        methods=["POST"],
        openapi_extra=openapi_body(signed_body, "keyId", "body", "signature"),
    )
    router.add_api_route("/federation", federation, methods=["POST"], openapi_extra=openapi_body(login_body))
    router.add_api_route(
        "/timeoffset/token", time_offset_token, methods=["POST"], openapi_extra=openapi_body(login_body)
    )
    router.add_api_route("/system/version", get_service_version, methods=["GET"])
    router.add_api_route(
        "/{rest:path}",
        unsupported_route(prefix, "auth"),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    return router


async def issue_login_body(
    conveyor_app: Any, grn: Grn, *, key: str, user_id: str, expires_in: float = 600.0
) -> dict[str, str]:
    """`{keyId, body, signature}` for `login_by_signature`, as GS2-Account's authentication gives a game client."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise ValidationError("user_id must be 1 to 1024 characters without NUL", field="user_id")
    if not 0 < expires_in <= 86400:
        raise ValidationError("expires_in must be more than 0 and at most 86400 seconds", field="expires_in")
    signing = await get_key(conveyor_app, key)
    now = now_ms()
    text = json.dumps({"userId": user_id, "timestamp": now, "expiresAt": now + int(expires_in * 1000)})
    return {"keyId": signing.key_id(grn), "body": text, "signature": signing.sign(text)}
