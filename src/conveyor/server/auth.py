"""Who is calling: admin tokens and signed user tokens.

Two kinds of caller exist (SPEC §4 Auth):

* an **admin** — one of the named admin tokens of the store (`conveyor token create NAME`, the one generated on
  the first start, or the server's `CONVEYOR_ADMIN_TOKEN`), kept in the store only as hashes
  (`conveyor.server.tokens`), so every API node on a shared store accepts the same tokens;
* a **user** — a token an admin issued for one `user_id` (optionally one namespace). User tokens are
  self-contained and HMAC-SHA256 signed with a secret also kept in the store (`CONVEYOR_TOKEN_SECRET` overrides),
  so checking one costs no store round trip, and they expire.

A server caches the token digests and the secret and re-reads them every `REFRESH_SECONDS` (and, at most once a
second, when a token it does not know is presented): a token created, revoked or a secret rotated on another node
or by the CLI takes effect here within that time, at once on the node that made the change.

Tokens travel as `Authorization: Bearer <token>` only, never in a URL (URLs end up in logs, history and Referer
headers). Who may call what is decided in one place, `conveyor.server.access`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError, ValidationError
from conveyor.server import tokens

if TYPE_CHECKING:
    from conveyor.app import Conveyor

USER_TOKEN_PREFIX = "cvu1"
REFRESH_SECONDS = 5.0
MISS_REFRESH_SECONDS = 1.0
DEFAULT_USER_TOKEN_TTL = 86_400.0  # one day
MAX_USER_TOKEN_TTL = 366 * 86_400.0


class Unauthorized(ConveyorError):
    """No token, or one that is malformed, forged or expired."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ConveyorError):
    """A valid token that may not reach this resource (a user token on an admin route, or another user's data)."""

    status_code = 403
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. `user_id`/`namespace` are set for user tokens only."""

    kind: str  # "admin" | "user"
    user_id: str | None = None
    namespace: str | None = None
    expires_at: datetime | None = None
    name: str | None = None  # the admin token's name

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def may_see(self, namespace: str, user_id: str | None) -> bool:
        """Whether this caller may read or act on data of (namespace, user_id)."""
        if self.is_admin:
            return True
        if user_id is None or user_id != self.user_id:
            return False
        return self.namespace is None or self.namespace == namespace


ADMIN = Principal("admin")
log = logging.getLogger("conveyor.server")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    user_id: str
    namespace: str | None
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_user_token(secret: str, user_id: str, namespace: str | None, expires_at: float) -> str:
    """`cvu1.<claims>.<signature>`: claims are compact JSON, the signature covers prefix and claims."""
    claims = {"u": user_id, "e": int(expires_at)}
    if namespace is not None:
        claims["n"] = namespace
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signed = f"{USER_TOKEN_PREFIX}.{body}"
    sig = _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())
    return f"{signed}.{sig}"


def verify_user_token(secret: str, token: str, *, now: float | None = None) -> Principal:
    """Check signature and expiry; raise Unauthorized with a reason otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != USER_TOKEN_PREFIX:
        raise Unauthorized("Invalid token")
    signed = f"{parts[0]}.{parts[1]}"
    expected = _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        raise Unauthorized("Invalid token")
    try:
        claims = json.loads(_unb64(parts[1]))
        user_id = claims["u"]
        expires = int(claims["e"])
        namespace = claims.get("n")
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("Invalid token") from None
    if not isinstance(user_id, str) or (namespace is not None and not isinstance(namespace, str)):
        raise Unauthorized("Invalid token")
    if expires <= (time.time() if now is None else now):
        raise Unauthorized("Token expired; ask an admin for a new one (conveyor token USER_ID)")
    return Principal("user", user_id=user_id, namespace=namespace, expires_at=datetime.fromtimestamp(expires, UTC))


class ServerAuth:
    """The admin-token digests and the user-token secret of one server, and the check of bearer tokens.

    Build it with `await ServerAuth.load(app)` (reads the store's auth document, registering this server's
    configured admin token and creating what a fresh store lacks) or directly with known values,
    `ServerAuth(admin_token, token_secret)` (tests, a bare GS2 router): then nothing is read from a store."""

    metrics_token: str | None = None

    def __init__(
        self,
        admin_token: str | None = None,
        token_secret: str = "",
        *,
        app: Conveyor | None = None,
        env_secret: str | None = None,
    ) -> None:
        self.app = app
        self.env_secret = env_secret
        self.token_secret = env_secret or token_secret
        self._digests: dict[str, str] = {tokens.digest(admin_token): "static"} if admin_token else {}
        self.generated_admin_token: str | None = None  # a token this server generated: printed once, then dropped
        self.warnings: tuple[str, ...] = ()
        self._loaded_at = time.monotonic()
        self._missed_at = 0.0
        self._refreshing: asyncio.Lock | None = None

    @classmethod
    async def load(cls, app: Conveyor, *, admin_token: str | None = None) -> ServerAuth:
        """A server's auth: `admin_token`, else `CONVEYOR_ADMIN_TOKEN`, is registered as the named token
        `CONVEYOR_ADMIN_TOKEN`; on a store without admin tokens and without one configured, one is generated
        (`generated_admin_token`, to print once). The secret is `CONVEYOR_TOKEN_SECRET` or the store's."""
        await app.aopen()
        configured = admin_token or os.environ.get("CONVEYOR_ADMIN_TOKEN") or None
        env_secret = os.environ.get("CONVEYOR_TOKEN_SECRET") or None
        start = await tokens.register_server(app, configured=configured, env_secret=env_secret)
        auth = cls(app=app, env_secret=env_secret)
        auth.apply(start.state)
        auth.generated_admin_token = start.generated
        auth.warnings = start.warnings
        for warning in start.warnings:
            log.warning("%s", warning)
        return auth

    def apply(self, state: tokens.AuthState) -> None:
        """Take a (re-)read auth document: the active admin tokens and the current secret."""
        self._digests = state.admin_digests()
        self.token_secret = self.env_secret or state.token_secret
        self._loaded_at = time.monotonic()

    async def refresh(self) -> bool:
        """Re-read the store's auth document (one read; concurrent callers share it). False when it cannot be read
        (the store is down): the cached tokens stay in force."""
        if self.app is None:
            return False
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        started = time.monotonic()
        async with self._refreshing:
            if self._loaded_at >= started:  # someone refreshed while we waited
                return True
            try:
                state = await tokens.read_state(self.app)
            except ConveyorError as exc:
                log.debug("auth settings not refreshed: %s", exc.message)
                return False
            if state is not None:
                self.apply(state)
            return True

    async def _refresh_on_miss(self) -> bool:
        """For a token this server does not know: re-read, at most once a second (an unknown token may be one just
        created elsewhere; a flood of bad tokens costs at most one store read a second)."""
        now = time.monotonic()
        if self.app is None or now - self._missed_at < MISS_REFRESH_SECONDS:
            return False
        self._missed_at = now
        return await self.refresh()

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; Unauthorized when it is missing or invalid."""
        if not token:
            raise Unauthorized("Authorization header is required (Authorization: Bearer <token>)")
        if self.app is not None and time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            await self.refresh()
        principal = self._check(token)
        if principal is None and await self._refresh_on_miss():
            principal = self._check(token)
        if principal is None:
            return verify_user_token(self.token_secret, token)  # raises with the reason (invalid, expired)
        return principal

    def _check(self, token: str) -> Principal | None:
        name = self._digests.get(tokens.digest(token))
        if name is not None:
            return Principal("admin", name=name)
        if token.startswith(USER_TOKEN_PREFIX + "."):
            try:
                return verify_user_token(self.token_secret, token)
            except Unauthorized as exc:
                if "expired" in exc.message:
                    raise
        return None

    async def authenticate_token(self, token: str | None) -> Principal | None:
        """The principal for a token, None when it is missing or invalid (conveyor.server.access.Authenticator)."""
        try:
            return await self.authenticate(token)
        except Unauthorized:
            return None

    def issue(self, user_id: str, *, namespace: str | None = None, ttl: float = DEFAULT_USER_TOKEN_TTL) -> IssuedToken:
        return issue_user_token(self.token_secret, user_id, namespace=namespace, ttl=ttl)


def issue_user_token(
    secret: str, user_id: str, *, namespace: str | None = None, ttl: float = DEFAULT_USER_TOKEN_TTL
) -> IssuedToken:
    """Validate and sign a user token (shared by the HTTP endpoint and the `conveyor token` command)."""
    from conveyor.model import validate_name

    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 1024 or "\x00" in user_id:
        raise ValidationError("user_id must be a string of 1 to 1024 characters", field="user_id")
    if namespace is not None:
        validate_name(namespace, "namespace")
    if not 0 < ttl <= MAX_USER_TOKEN_TTL:
        raise ValidationError(
            f"ttl must be more than 0 and at most {int(MAX_USER_TOKEN_TTL)} seconds, got {ttl!r}", field="ttl"
        )
    expires = time.time() + ttl
    token = sign_user_token(secret, user_id, namespace, expires)
    return IssuedToken(token, user_id, namespace, datetime.fromtimestamp(int(expires), UTC))


async def aissue_user_token(
    app: Conveyor, user_id: str, *, namespace: str | None = None, ttl: float = DEFAULT_USER_TOKEN_TTL
) -> IssuedToken:
    """Issue a user token that the servers on `app`'s store accept (used by `conveyor token issue`): signed with
    their secret — the store's, or `CONVEYOR_TOKEN_SECRET` when they use it, which must then be set here too."""
    state = await tokens.load_state(app)
    secret = tokens.check_cli_secret(state, os.environ.get("CONVEYOR_TOKEN_SECRET") or None)
    return issue_user_token(secret, user_id, namespace=namespace, ttl=ttl)
