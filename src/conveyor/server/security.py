"""Browser hardening for every answer the server sends, and no credentials in URLs.

`SecurityHeaders` is the outermost middleware, so every answer — the admin UI's files, the API's JSON, the event
stream, a 413 from the body limit, a 500 — carries:

* `Content-Security-Policy`: scripts, styles, images and connections from this origin only, no inline script or
  style, no plugins, no `<base>`, and `frame-ancestors 'none'`. An injected string can neither run nor load
  anything. (FastAPI's `/docs` and `/redoc` pages load Swagger UI / ReDoc from their CDN with an inline bootstrap
  script, so those three paths get a policy that allows exactly that, still unframeable.)
* `X-Frame-Options: DENY` (older browsers' clickjacking guard), `X-Content-Type-Options: nosniff` (a JSON answer
  is never run as a script or rendered as HTML), `Referrer-Policy: no-referrer` (no URL leaves the page),
  `Cross-Origin-Opener-Policy` and `Cross-Origin-Resource-Policy: same-origin` (other sites cannot hold a window
  handle on the UI nor embed its answers), and `Cache-Control: no-store` on API answers (job data does not stay in
  caches).

Tokens are read only from the `Authorization` header (and GS2's `X-GS2-ACCESS-TOKEN`): a URL ends up in server
and proxy logs, browser history and Referer headers. A request that carries one in its query string (`token`,
`access_token`) is refused with 400 before anything else runs, so a client that used to do it learns at once
instead of leaking the token quietly.

It is also the last line of defence for errors: an exception that escapes everything else answers a JSON 500
that says nothing of its cause (the cause goes to the server log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse

from conveyor.server.common import error_response
from conveyor.server.gs2_models import GS2ErrorItem, error_body

log = logging.getLogger("conveyor.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
TOKEN_QUERY_NAMES = frozenset({"token", "access_token"})
_GS2_PREFIXES = ("/job-queue", "/identifier")


def _headers(csp: str, *, no_store: bool) -> list[tuple[bytes, bytes]]:
    values = [
        (b"content-security-policy", csp.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]
    if no_store:
        values.append((b"cache-control", b"no-store"))
    return values


_API_HEADERS = _headers(CONTENT_SECURITY_POLICY, no_store=True)
_UI_HEADERS = _headers(CONTENT_SECURITY_POLICY, no_store=False)
_DOCS_HEADERS = _headers(DOCS_CONTENT_SECURITY_POLICY, no_store=False)


def _headers_for(path: str) -> list[tuple[bytes, bytes]]:
    if path in DOCS_PATHS:
        return _DOCS_HEADERS
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return _UI_HEADERS
    return _API_HEADERS


def _token_in_query(scope: Scope) -> str | None:
    raw: bytes = scope.get("query_string", b"")
    if b"token" not in raw:
        return None
    for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name.lower() in TOKEN_QUERY_NAMES:
            return name
    return None


def _refuse_token_in_url(path: str, name: str) -> JSONResponse:
    message = (
        f"a token in the URL ({name}=...) is not accepted: URLs end up in logs, browser history and Referer "
        "headers. Send it as the header Authorization: Bearer <token> (browsers: read event streams with fetch())"
    )
    if path.startswith(_GS2_PREFIXES):
        return JSONResponse(error_body([GS2ErrorItem(name, message, "jobQueue.token.error.inUrl")]), 400)
    return error_response(400, message, error="token_in_url", field=name)


class SecurityHeaders:
    """ASGI middleware: security headers on every HTTP answer, tokens in URLs refused, a quiet 500 for errors
    that escaped every handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = _headers_for(path)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in extra if item[0] not in present)
                message["headers"] = headers
            await send(message)

        name = _token_in_query(scope)
        if name is not None:
            await _refuse_token_in_url(path, name)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            response = error_response(500, "internal error; see the server log", error="internal_error")
            await response(scope, receive, send_with_headers)
