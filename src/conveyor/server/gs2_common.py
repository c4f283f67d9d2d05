"""What every GS2 router shares: the auth protocol the routers need, the request plumbing (gzip bodies, JSON
bodies, GS2's error format on every failure) and the OpenAPI helpers. `gs2.py` (job queue, identifier login),
`gs2_auth.py` and `gs2_userdata.py` import it; it imports none of them, so the GS2 modules form a DAG
(pyproject.toml's `acyclic` contract keeps it so)."""

from __future__ import annotations

import inspect
import logging
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from conveyor.errors import Conflict, ConveyorError, ValidationError
from conveyor.model import JSON, loads_json
from conveyor.server.common import SERVER_ERROR_TEXT, STORE_UNAVAILABLE_TEXT, server_error_text
from conveyor.server.gs2_models import CONFLICT_MESSAGE, GS2Error, GS2ErrorItem, error_body

log = logging.getLogger("conveyor.server.gs2")

T = TypeVar("T")

JOB_QUEUE_PREFIX = "/job-queue"
IDENTIFIER_PREFIX = "/identifier"
DEFAULT_REGION = "ap-northeast-1"
DEFAULT_OWNER_ID = "conveyor"
DUPLICATION_TTL = 24 * 3600.0
"""How long a request answered under an `X-GS2-DUPLICATION-AVOIDER` is replayed to retries."""
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Inflated body limit: 10 entries × 128 KiB of args fit many times over; a gzip bomb does not."""
"""Page tokens are offsets; anything larger is not one we issued (and would overflow SQLite's integers)."""
ACCESS_TOKEN_HEADER = "X-GS2-ACCESS-TOKEN"
DUPLICATION_HEADER = "X-GS2-DUPLICATION-AVOIDER"


# ---- what the router needs from the server's auth ----------------------------------------------------------------


class GS2Principal(Protocol):
    """The caller a token stands for (`conveyor.server.auth.Principal` has this shape)."""

    @property
    def is_admin(self) -> bool: ...

    @property
    def user_id(self) -> str | None: ...

    def may_see(self, namespace: str, user_id: str | None) -> bool: ...


class GS2Auth(Protocol):
    """What the GS2 routers need from the server's auth object.

    `authenticate(token)` returns the principal of an admin or user token (see `GS2Principal`) and raises a
    `ConveyorError` with status 401 for a missing, forged or expired one; any other `ConveyorError` (say a 503
    `StoreUnavailable` while the secrets cannot be read) is answered with its own status. Sync or async.

    Optionally, `issue_admin_token_for(client_id, client_secret) -> str | None` (sync or async) lets the GS2
    login exchange a client id/secret for a project token; without it the login accepts any valid Conveyor token
    as `client_secret` and hands that same token back as the project token (see `build_identifier_router`).
    """

    def authenticate(self, token: str | None) -> Any: ...


async def maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


async def principal_for(auth: GS2Auth, token: str | None) -> GS2Principal | None:
    if not token:
        return None
    try:
        principal: GS2Principal = await maybe_await(auth.authenticate(token))
    except ConveyorError as exc:
        if exc.status_code == 401:
            return None
        raise
    return principal


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized(message: str) -> GS2Error:
    return GS2Error(401, "auth", message, "jobQueue.auth.error.unauthorized")


def unsupported_route(prefix: str, service: str) -> Callable[[Request, str], Coroutine[Any, Any, dict[str, JSON]]]:
    """The catch-all of a GS2 prefix: an unknown route answers 404 in GS2's format, so the SDK raises
    NotFoundException with readable `errors` rather than failing to parse FastAPI's own 404 body."""

    async def unsupported(request: Request, rest: str) -> dict[str, JSON]:
        raise GS2Error(
            404,
            "operation",
            f"{request.method} {prefix}/{rest} is not a GS2 {service} operation Conveyor offers (see docs/gs2.md)",
            f"{service}.operation.error.notSupported",
        )

    return unsupported


# ---- request/response plumbing -----------------------------------------------------------------------------------


class _GS2Request(Request):
    """A request whose body is inflated when the client sent `Content-Encoding: gzip` (the SDK always does)."""

    async def body(self) -> bytes:
        if not hasattr(self, "_gs2_body"):
            raw = await super().body()
            encoding = self.headers.get("content-encoding", "").lower()
            if "gzip" in encoding and raw:
                raw = _inflate(raw)
            elif len(raw) > MAX_BODY_BYTES:
                raise GS2Error(400, "body", f"request body exceeds {MAX_BODY_BYTES} bytes", "jobQueue.body.tooLarge")
            self._gs2_body = raw
        return self._gs2_body


def _inflate(raw: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise GS2Error(400, "body", f"body is not valid gzip: {exc}", "jobQueue.body.invalidGzip") from None
    if len(out) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise GS2Error(400, "body", f"inflated body exceeds {MAX_BODY_BYTES} bytes", "jobQueue.body.tooLarge")
    return out


def error_response(exc: BaseException, request: Request | None = None) -> JSONResponse:
    """Every failure in GS2's error format, with the status that picks the SDK's exception class. A 5xx tells a
    caller other than the admin no internal detail (`conveyor.server.common.server_error_text`)."""
    if isinstance(exc, GS2Error):
        return JSONResponse(error_body(exc.items), status_code=exc.status)
    if isinstance(exc, Conflict):
        return JSONResponse(error_body([GS2ErrorItem("job", CONFLICT_MESSAGE, "jobQueue.job.error.conflict")]), 409)
    if isinstance(exc, ConveyorError):
        status = exc.status_code
        if isinstance(exc, ValidationError) or status == 413:
            status = 400  # GS2 has no 413: an oversized value is a bad request to its SDK
        component = getattr(exc, "field", None) or exc.code
        message = exc.message
        if status >= 500:
            message = server_error_text(request, exc) if request is not None else STORE_UNAVAILABLE_TEXT
        return JSONResponse(error_body([GS2ErrorItem(component, message, f"jobQueue.{exc.code}")]), status)
    if isinstance(exc, RequestValidationError):
        items = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
            items.append(GS2ErrorItem(".".join(loc) or "request", str(err.get("msg")), "jobQueue.request.invalid"))
        return JSONResponse(error_body(items or [GS2ErrorItem("request", "invalid request", "invalid")]), 400)
    if isinstance(exc, HTTPException):
        return JSONResponse(
            error_body([GS2ErrorItem("request", str(exc.detail), f"jobQueue.http.{exc.status_code}")]),
            exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        log.warning("store unreachable while serving a GS2 request: %s", exc)
        return JSONResponse(
            error_body([GS2ErrorItem("store", STORE_UNAVAILABLE_TEXT, "jobQueue.store.unavailable")]), 503
        )
    log.exception("unexpected error in a GS2 request", exc_info=exc)
    return JSONResponse(error_body([GS2ErrorItem("server", SERVER_ERROR_TEXT, "jobQueue.internal")]), 500)


class GS2Route(APIRoute):
    """Inflates gzip bodies and answers every exception in GS2's error format (see module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(_GS2Request(request.scope, request.receive))
            except Exception as exc:
                return error_response(exc, request)

        return handler


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = loads_json(raw, "body")
    except ValidationError as exc:
        component = (exc.field or "body").removeprefix("body.") or "body"
        raise GS2Error(400, component, exc.message.removeprefix("body."), "jobQueue.body.invalidJson") from None
    if not isinstance(data, dict):
        raise GS2Error(400, "body", "body must be a JSON object", "jobQueue.body.invalidJson")
    return data


_ERROR_SCHEMA: dict[str, Any] = {
    "description": "GS2 error: `message` is a JSON string of [{component, message, code}]",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}
        }
    },
}
GS2_RESPONSES: dict[int | str, dict[str, Any]] = {code: _ERROR_SCHEMA for code in (400, 401, 404, 409, 500, 503)}


def openapi_body(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """Document a JSON body the endpoint reads itself (so FastAPI's 422 never replaces GS2's 400), for readers
    of /openapi.json and for the fuzzer. The SDK sends it gzip-compressed; plain JSON is accepted too."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
