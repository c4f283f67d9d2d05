"""Per-server state and the FastAPI dependencies every route uses (who is calling, which app)."""

from __future__ import annotations

import asyncio
import hmac
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from conveyor.errors import StoreUnavailable, ValidationError
from conveyor.server.auth import ADMIN, Forbidden, Principal, ServerAuth

if TYPE_CHECKING:
    from conveyor.app import Conveyor


@dataclass
class ServerContext:
    """Everything the routes share. `auth` is loaded on start; if the store was down then, on first use."""

    app: Conveyor
    admin_token: str | None = None
    demo: bool = False
    idempotency_ttl: float = 86_400.0
    auth: ServerAuth | None = None
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    _auth_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get_auth(self) -> ServerAuth:
        if self.auth is None:
            async with self._auth_lock:
                if self.auth is None:
                    self.auth = await ServerAuth.load(self.app, admin_token=self.admin_token)
        return self.auth


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.conveyor
    return ctx


async def get_context(request: Request) -> ServerContext:
    """Async on purpose: FastAPI runs plain-def dependencies in a thread pool, a costly hop per request."""
    return context_of(request)


_bearer = HTTPBearer(auto_error=False, description="Admin token or a user token (`conveyor token USER_ID`)")


async def get_principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """Any valid token. Reads the header itself so the 401 says what was wrong."""
    ctx = context_of(request)
    header = request.headers.get("authorization")
    try:
        auth = await ctx.get_auth()
    except StoreUnavailable as exc:
        # A configured admin token needs no store to check: let the call through, it answers 503 itself
        # with the store's own message (e.g. the demo's "job queue service is unavailable: ...").
        configured = ctx.admin_token or os.environ.get("CONVEYOR_ADMIN_TOKEN")
        if configured and header:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), configured.encode()):
                return ADMIN
        raise StoreUnavailable(f"cannot check the token: {exc.message}") from None
    return auth.authenticate_header(header)


async def require_admin(principal: Principal = Depends(get_principal)) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This call needs the admin token; user tokens reach only their own user's jobs")
    return principal


def resolve_user(principal: Principal, namespace: str, user_id: str) -> str:
    """Check that the caller may act for (namespace, user_id); `me` names the token's own user."""
    if user_id == "me":
        if principal.user_id is None:
            raise ValidationError(
                "'me' names the user of a user token; the admin token must give a user id", field="user_id"
            )
        user_id = principal.user_id
    if not principal.may_see(namespace, user_id):
        raise Forbidden("This token belongs to another user or namespace")
    return user_id
