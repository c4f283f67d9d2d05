"""Who is calling: the admin token, signed user tokens, and the FastAPI dependencies that check them.

Two kinds of caller exist (SPEC §4 Auth):

* the **admin** — one shared secret, from `CONVEYOR_ADMIN_TOKEN` or generated on first start and kept in the
  store's key-value space (so every API node on a shared store accepts the same token), printed once;
* a **user** — a token an admin issued for one `user_id` (optionally one namespace). User tokens are
  self-contained and HMAC-SHA256 signed with a secret also kept in the store (`CONVEYOR_TOKEN_SECRET` overrides),
  so checking one costs no store round trip, and they expire.

Tokens travel as `Authorization: Bearer <token>` only, never in a URL (URLs end up in logs, history and Referer
headers). Who may call what is decided in one place, `conveyor.server.access`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor.errors import ConveyorError, ValidationError

if TYPE_CHECKING:
    from conveyor.app import Conveyor

ADMIN_TOKEN_KEY = "server:admin_token"
TOKEN_SECRET_KEY = "server:token_secret"
USER_TOKEN_PREFIX = "cvu1"
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
    """Holds the admin token and the user-token secret of one server, and checks bearer tokens.

    Build it with `await ServerAuth.load(app)` (reads or creates both secrets in the store) or directly with
    known values (tests, the GS2 router)."""

    def __init__(self, admin_token: str, token_secret: str, *, generated_admin_token: bool = False) -> None:
        self.admin_token = admin_token
        self.token_secret = token_secret
        self.generated_admin_token = generated_admin_token

    @classmethod
    async def load(cls, app: Conveyor, *, admin_token: str | None = None) -> ServerAuth:
        """Resolve secrets: explicit argument, then environment, then the store (created on first start)."""
        await app.aopen()
        generated = False
        token = admin_token or os.environ.get("CONVEYOR_ADMIN_TOKEN") or None
        if token is None:
            token, generated = await _get_or_create(app, ADMIN_TOKEN_KEY, "cva_" + secrets.token_urlsafe(32))
        secret = os.environ.get("CONVEYOR_TOKEN_SECRET") or None
        if secret is None:
            secret, _ = await _get_or_create(app, TOKEN_SECRET_KEY, secrets.token_urlsafe(48))
        return cls(token, secret, generated_admin_token=generated)

    metrics_token: str | None = None

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; Unauthorized when it is missing or invalid."""
        if not token:
            raise Unauthorized("Authorization header is required (Authorization: Bearer <token>)")
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN
        return verify_user_token(self.token_secret, token)

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


async def _get_or_create(app: Conveyor, key: str, fresh: str) -> tuple[str, bool]:
    """Atomic first-start creation: the first process to set the key wins, everyone else reads it."""

    async def go() -> tuple[str, bool]:
        created = await app.store.kv_set(key, fresh, only_if_absent=True)
        if created:
            return fresh, True
        value = await app.store.kv_get(key)
        if value is None:  # deleted in between: take ours
            await app.store.kv_set(key, fresh)
            return fresh, True
        return value, False

    return await app._on_home(go)


async def aissue_user_token(
    app: Conveyor, user_id: str, *, namespace: str | None = None, ttl: float = DEFAULT_USER_TOKEN_TTL
) -> IssuedToken:
    """Issue a user token for the server that serves `app`'s store (used by `conveyor token`)."""
    auth = await ServerAuth.load(app)
    return auth.issue(user_id, namespace=namespace, ttl=ttl)


async def aadmin_token(app: Conveyor) -> str:
    """The admin token the server on this store accepts (env first, else created/stored on first use)."""
    auth = await ServerAuth.load(app)
    return auth.admin_token
