"""Per-server state and the FastAPI dependencies routes use (which app, who is calling).

Who may call a route is decided by `conveyor.server.access` (one matrix, one guard for the whole application);
routes only read the caller it found (`caller`, `path_user`)."""

from __future__ import annotations

import asyncio
import hmac
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from conveyor.errors import StoreUnavailable
from conveyor.server.access import caller, path_user
from conveyor.server.auth import ADMIN, Principal, ServerAuth, Unauthorized

if TYPE_CHECKING:
    from conveyor.app import Conveyor


@dataclass
class ServerContext:
    """Everything the routes share. `auth` is loaded on start; if the store was down then, on first use."""

    app: Conveyor
    admin_token: str | None = None
    demo: bool = False
    idempotency_ttl: float = 86_400.0
    metrics_token: str | None = None
    print_admin_token: bool = True
    auth: ServerAuth | None = None
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    _auth_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get_auth(self) -> ServerAuth:
        if self.auth is None:
            async with self._auth_lock:
                if self.auth is None:
                    auth = await ServerAuth.load(self.app, admin_token=self.admin_token)
                    if auth.generated_admin_token and self.print_admin_token:
                        print(
                            "Conveyor admin token (generated on first start; the store keeps only its hash, so it "
                            f"is shown this once):\n  {auth.generated_admin_token}\n"
                            "Use it as: Authorization: Bearer <token>. More: conveyor token create NAME; list and "
                            "revoke them with conveyor token list / revoke NAME.",
                            flush=True,
                        )
                    auth.generated_admin_token = None
                    self.auth = auth
        return self.auth

    async def authenticate_token(self, token: str | None) -> Principal | None:
        """The principal of `token`, None when it is missing or not valid (forged, expired, revoked). While the
        store is down the secrets cannot be read: the configured admin token still passes (its call then answers
        503 by itself, e.g. the demo's "job queue service is unavailable"), any other token gets 503."""
        if not token:
            return None
        try:
            auth = await self.get_auth()
        except StoreUnavailable as exc:
            configured = self.admin_token or os.environ.get("CONVEYOR_ADMIN_TOKEN")
            if configured and hmac.compare_digest(token.encode(), configured.encode()):
                return ADMIN
            raise StoreUnavailable(f"cannot check the token: {exc.message}") from None
        try:
            return await auth.authenticate(token)
        except Unauthorized:
            return None


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.conveyor
    return ctx


async def get_context(request: Request) -> ServerContext:
    """Async on purpose: FastAPI runs plain-def dependencies in a thread pool, a costly hop per request."""
    return context_of(request)


async def get_principal(request: Request) -> Principal:
    """The caller the access guard authenticated (routes whose rule needs a token)."""
    return caller(request)


async def get_user(request: Request) -> str:
    """The user a per-user route acts for, as the access guard resolved it (`me` → the token's own user)."""
    return path_user(request)
