"""The server's secrets at rest: named admin tokens (kept only as hashes) and the user-token signing secret.

Everything lives in one document of the store's key-value space, `server:auth`, so every API node and every
`conveyor token` command on the same store sees the same tokens:

    {"version": 1,
     "token_secret": "...",                 # HMAC-SHA256 key of user tokens (must be usable, so it is not hashed)
     "secret_rotated_at": "2026-...Z",
     "env_secret_fingerprint": null,        # PBKDF2 of CONVEYOR_TOKEN_SECRET when the servers sign with it
     "admin_tokens": [{"name": "ops", "sha256": "<hex>", "source": "created", "created_at": "...",
                       "hint": "cva_…x1Yz", "revoked_at": null}, ...]}

Admin tokens are stored only as SHA-256 digests and shown once, when created. Generated tokens are 256 random
bits, for which a plain SHA-256 is the right hash (GitHub and PyPI store API tokens so): a slow password hash
would only make every request pay for it, and there is nothing to guess. A token chosen by hand
(`CONVEYOR_ADMIN_TOKEN`) is only as strong as its choice; the server warns when it is short.

The `CONVEYOR_ADMIN_TOKEN` of a server is one of the named tokens (name `CONVEYOR_ADMIN_TOKEN`): the server
registers its digest at start, so `conveyor token list` shows it and revoking it works; a token created by
`conveyor token create` is accepted by that server too. A revoked digest stays in the document as a tombstone,
so a restart with the same variable does not bring it back.

Changes are read-modify-write under a lock key (`server:auth:lock`, taken with the store's atomic test-and-set,
expiring after 30 s so a process that dies holding it blocks nobody for long). Reads need no lock.

Stores made by older versions kept the admin token in plain text (`server:admin_token`) and the secret in
`server:token_secret`: the first load hashes the token into the document (name `generated`) and deletes the
plain copy — the migration in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from conveyor.errors import Conflict, ConveyorError, NotFound, ValidationError
from conveyor.model import validate_name

if TYPE_CHECKING:
    from conveyor.app import Conveyor

AUTH_KEY = "server:auth"
LOCK_KEY = "server:auth:lock"
LEGACY_ADMIN_TOKEN_KEY = "server:admin_token"
LEGACY_TOKEN_SECRET_KEY = "server:token_secret"
CONFIGURED_NAME = "CONVEYOR_ADMIN_TOKEN"
GENERATED_NAME = "generated"
ADMIN_TOKEN_PREFIX = "cva_"
LOCK_TTL = 30.0
LOCK_WAIT = 15.0
WEAK_TOKEN_LENGTH = 32

T = TypeVar("T")


def digest(token: str) -> str:
    """The stored form of an admin token: SHA-256 (fast, as a lookup on every request must be)."""
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(secret: str) -> str:
    """What the store keeps of `CONVEYOR_TOKEN_SECRET` to compare with: a slow hash (PBKDF2, computed at a server's
    start and per `conveyor token issue`), so a hand-chosen secret cannot be recovered from it by guessing."""
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), b"conveyor token secret fingerprint", 200_000).hex()


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_secret() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One named admin token as stored: its digest, never the token."""

    name: str
    sha256: str
    source: str  # "generated" (first start), "created" (conveyor token create, the API), "configured" (env)
    created_at: str
    hint: str = ""  # "cva_…" and the last four characters, so an operator can tell tokens apart
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, str | bool | None]:
        """What listings show (no digest: it identifies nothing an operator needs)."""
        return {
            "name": self.name,
            "source": self.source,
            "created_at": self.created_at,
            "hint": self.hint or None,
            "active": self.active,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class AuthState:
    token_secret: str
    secret_rotated_at: str | None = None
    env_secret_fingerprint: str | None = None
    admin_tokens: tuple[AdminToken, ...] = field(default_factory=tuple)

    def active_tokens(self) -> list[AdminToken]:
        return [t for t in self.admin_tokens if t.active]

    def admin_digests(self) -> dict[str, str]:
        """digest → name of every active admin token."""
        return {t.sha256: t.name for t in self.admin_tokens if t.active}

    def to_json(self) -> str:
        doc = {
            "version": 1,
            "token_secret": self.token_secret,
            "secret_rotated_at": self.secret_rotated_at,
            "env_secret_fingerprint": self.env_secret_fingerprint,
            "admin_tokens": [asdict(t) for t in self.admin_tokens],
        }
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AuthState:
        try:
            doc = json.loads(text)
            tokens = tuple(AdminToken(**t) for t in doc.get("admin_tokens", ()))
            secret = doc["token_secret"]
            if not isinstance(secret, str) or not secret:
                raise ValueError("empty token_secret")
            return cls(secret, doc.get("secret_rotated_at"), doc.get("env_secret_fingerprint"), tokens)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConveyorError(
                f"the server's auth settings in the store ({AUTH_KEY}) are unreadable ({exc}); restore them from "
                "a backup, or delete the key to start over (every admin and user token then stops working)"
            ) from None


class AuthLocked(ConveyorError):
    """Another process is changing the auth settings right now."""

    status_code = 409
    code = "conflict"


# ---- reading and changing the document --------------------------------------------------------------------------


class KV(Protocol):
    """The store's key-value space: a `Store` itself (`conveyor migrate`), or an app's (`AppKV`: carried to the
    app's home loop)."""

    async def kv_get(self, key: str) -> str | None: ...

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool: ...

    async def kv_delete(self, key: str) -> None: ...


class AppKV:
    def __init__(self, app: Conveyor) -> None:
        self.app = app

    async def kv_get(self, key: str) -> str | None:
        return await self.app.akv_get(key)

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        return await self.app.akv_set(key, value, ttl=ttl, only_if_absent=only_if_absent)

    async def kv_delete(self, key: str) -> None:
        await self.app.akv_delete(key)


def _kv(app: Conveyor | KV) -> KV:
    from conveyor.app import Conveyor

    return AppKV(app) if isinstance(app, Conveyor) else app


async def read_state(app: Conveyor | KV) -> AuthState | None:
    """The current document, None when the store has none yet (a fresh store, or one an older version made)."""
    raw = await _kv(app).kv_get(AUTH_KEY)
    return None if raw is None else AuthState.from_json(raw)


async def load_state(app: Conveyor | KV) -> AuthState:
    """The document, created (or migrated from an older version's plain keys) when missing."""
    state = await read_state(app)
    if state is not None:
        return state
    return await update_state(app, lambda current: (current, current))


async def migrate_legacy(app: Conveyor | KV) -> bool:
    """`conveyor migrate`'s step: hash an older version's plain admin token into the document, if the store has
    one. True when it did."""
    kv = _kv(app)
    if await kv.kv_get(LEGACY_ADMIN_TOKEN_KEY) is None and await kv.kv_get(LEGACY_TOKEN_SECRET_KEY) is None:
        return False
    await update_state(kv, lambda current: (current, current))
    return True


async def update_state(app: Conveyor | KV, change: Callable[[AuthState], tuple[AuthState, T]]) -> T:
    """Apply `change` to the document under the store lock: read, change, write. `change` gets the current state
    (a new one on a fresh store, the migrated one on an old store) and answers (new state, result)."""
    kv = _kv(app)
    owner = secrets.token_hex(8)
    deadline = time.monotonic() + LOCK_WAIT
    while not await kv.kv_set(LOCK_KEY, owner, ttl=LOCK_TTL, only_if_absent=True):
        if time.monotonic() > deadline:
            raise AuthLocked(
                f"the auth settings are locked by another process ({LOCK_KEY}); retry in a moment (a lock left by "
                f"a process that died expires within {LOCK_TTL:g} s)"
            )
        await asyncio.sleep(0.05)
    try:
        raw = await kv.kv_get(AUTH_KEY)
        legacy = False
        if raw is not None:
            state = AuthState.from_json(raw)
        else:
            state, legacy = await _from_legacy(kv)
        new, result = change(state)
        if new != state or raw is None:
            await kv.kv_set(AUTH_KEY, new.to_json())
        if legacy:  # hashed into the document: the plain copies go
            await kv.kv_delete(LEGACY_ADMIN_TOKEN_KEY)
            await kv.kv_delete(LEGACY_TOKEN_SECRET_KEY)
        return result
    finally:
        if await kv.kv_get(LOCK_KEY) == owner:
            await kv.kv_delete(LOCK_KEY)


async def _from_legacy(kv: KV) -> tuple[AuthState, bool]:
    """A first document: from an older version's plain keys when they exist (hashing the token), else new."""
    plain_token = await kv.kv_get(LEGACY_ADMIN_TOKEN_KEY)
    old_secret = await kv.kv_get(LEGACY_TOKEN_SECRET_KEY)
    tokens: tuple[AdminToken, ...] = ()
    if plain_token:
        tokens = (AdminToken(GENERATED_NAME, digest(plain_token), "generated", now_text(), _hint(plain_token)),)
    return AuthState(old_secret or new_token_secret(), None, None, tokens), bool(plain_token or old_secret)


def _hint(token: str) -> str:
    if not token.startswith(ADMIN_TOKEN_PREFIX) or len(token) < 24:
        return ""  # a hand-chosen token: not even four characters of it are shown
    return f"{ADMIN_TOKEN_PREFIX}…{token[-4:]}"


# ---- the operations (the CLI and the admin API call these) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    token: str
    record: AdminToken


def _check_name(name: str) -> None:
    validate_name(name, "name")


def _add(state: AuthState, name: str, source: str, token: str) -> tuple[AuthState, AdminToken]:
    record = AdminToken(name, digest(token), source, now_text(), _hint(token))
    return replace(state, admin_tokens=(*state.admin_tokens, record)), record


async def create_admin_token(app: Conveyor, name: str, *, source: str = "created") -> Created:
    """A new named admin token: returned once, stored only as its digest."""
    _check_name(name)
    token = new_admin_token()

    def change(state: AuthState) -> tuple[AuthState, AdminToken]:
        if any(t.name == name for t in state.active_tokens()):
            raise Conflict(f"an admin token named {name!r} exists; revoke it first or choose another name")
        return _add(state, name, source, token)

    return Created(token, await update_state(app, change))


async def list_admin_tokens(app: Conveyor) -> list[AdminToken]:
    state = await read_state(app)
    return [] if state is None else list(state.admin_tokens)


async def revoke_admin_token(app: Conveyor, name: str) -> AdminToken:
    """Revoke the active token `name`. The last active one cannot be revoked: create another first."""

    def change(state: AuthState) -> tuple[AuthState, AdminToken]:
        active = state.active_tokens()
        target = next((t for t in active if t.name == name), None)
        if target is None:
            raise NotFound(f"no active admin token named {name!r} (conveyor token list shows them)")
        if len(active) == 1:
            raise Conflict(
                f"{name!r} is the last active admin token: create another one first (conveyor token create NAME), "
                "or nobody could administer this store over HTTP"
            )
        revoked = replace(target, revoked_at=now_text())
        tokens = tuple(revoked if t is target else t for t in state.admin_tokens)
        return replace(state, admin_tokens=tokens), revoked

    return await update_state(app, change)


async def rotate_token_secret(app: Conveyor, *, env_secret: str | None) -> AuthState:
    """A new user-token signing secret: every user token issued so far stops working."""
    if env_secret:
        raise ValidationError(
            "CONVEYOR_TOKEN_SECRET is set here: user tokens are signed with it, not with the store's secret. "
            "Change the variable on every server instead (that rotates it)",
            field="CONVEYOR_TOKEN_SECRET",
        )

    def change(state: AuthState) -> tuple[AuthState, AuthState]:
        if state.env_secret_fingerprint is not None:
            raise ValidationError(
                "the servers on this store sign user tokens with CONVEYOR_TOKEN_SECRET; change that variable on "
                "every server to rotate it",
                field="CONVEYOR_TOKEN_SECRET",
            )
        new = replace(state, token_secret=new_token_secret(), secret_rotated_at=now_text())
        return new, new

    return await update_state(app, change)


@dataclass(frozen=True, slots=True)
class ServerStart:
    """What a server learned when it registered itself: the state, a token it generated (shown once), and warnings
    for its log."""

    state: AuthState
    generated: str | None = None
    warnings: tuple[str, ...] = ()


async def register_server(app: Conveyor, *, configured: str | None, env_secret: str | None) -> ServerStart:
    """A server's start: its configured admin token registered as `CONVEYOR_ADMIN_TOKEN` (a changed value replaces
    the old one, a revoked one is refused), a token generated when the store has none and none is configured, and
    the fingerprint of `CONVEYOR_TOKEN_SECRET` recorded so that `conveyor token issue` can tell whether it signs
    as the servers do. Takes the lock only when something must change."""
    wanted = fingerprint(env_secret) if env_secret else None
    state = await read_state(app)
    if state is not None and not _start_changes(state, configured, wanted):
        return ServerStart(state, None, _start_warnings(state, configured))
    generated: list[str] = []

    def change(current: AuthState) -> tuple[AuthState, AuthState]:
        new = current
        if configured:
            new = _register_configured(new, configured)
        elif not new.active_tokens():
            token = new_admin_token()
            generated.append(token)
            new, _ = _add(new, GENERATED_NAME, "generated", token)
        if new.env_secret_fingerprint != wanted:
            new = replace(new, env_secret_fingerprint=wanted)
        return new, new

    state = await update_state(app, change)
    return ServerStart(state, generated[0] if generated else None, _start_warnings(state, configured))


def _start_changes(state: AuthState, configured: str | None, wanted: str | None) -> bool:
    if state.env_secret_fingerprint != wanted:
        return True
    if configured:
        known = {t.sha256 for t in state.admin_tokens}
        return digest(configured) not in known
    return not state.active_tokens()


def _register_configured(state: AuthState, configured: str) -> AuthState:
    hashed = digest(configured)
    if any(t.sha256 == hashed for t in state.admin_tokens):
        return state  # known: active (nothing to do) or revoked (stays revoked: see the start warning)
    stamp = now_text()
    tokens = tuple(
        replace(t, revoked_at=stamp) if t.active and t.name == CONFIGURED_NAME else t for t in state.admin_tokens
    )
    record = AdminToken(CONFIGURED_NAME, hashed, "configured", stamp, _hint(configured))
    return replace(state, admin_tokens=(*tokens, record))


def _start_warnings(state: AuthState, configured: str | None) -> tuple[str, ...]:
    warnings: list[str] = []
    if configured:
        hashed = digest(configured)
        if not any(t.sha256 == hashed and t.active for t in state.admin_tokens):
            warnings.append(
                "CONVEYOR_ADMIN_TOKEN was revoked (conveyor token list): this server does not accept it; set a new "
                "value, or use a token from conveyor token create"
            )
        elif len(configured) < WEAK_TOKEN_LENGTH:
            warnings.append(
                f"CONVEYOR_ADMIN_TOKEN is {len(configured)} characters: use {WEAK_TOKEN_LENGTH} or more random "
                "characters (or conveyor token create NAME), since a short chosen token can be guessed"
            )
    return tuple(warnings)


def check_cli_secret(state: AuthState, env_secret: str | None) -> str:
    """The secret `conveyor token issue` must sign with so that the servers accept its tokens, or a clear error
    where they would not (the variable set here but not on the servers, or the other way round)."""
    recorded = state.env_secret_fingerprint
    if env_secret:
        if recorded is None:
            raise ValidationError(
                "CONVEYOR_TOKEN_SECRET is set here, but the servers on this store sign user tokens with the store's "
                "own secret: tokens signed with the variable would be refused. Unset it here (or start the servers "
                "with it first)",
                field="CONVEYOR_TOKEN_SECRET",
            )
        if fingerprint(env_secret) != recorded:
            raise ValidationError(
                "CONVEYOR_TOKEN_SECRET here differs from the one the servers on this store use: tokens signed with "
                "it would be refused. Use the servers' value",
                field="CONVEYOR_TOKEN_SECRET",
            )
        return env_secret
    if recorded is not None:
        raise ValidationError(
            "the servers on this store sign user tokens with CONVEYOR_TOKEN_SECRET: set the same variable here, "
            "or tokens issued without it would be refused",
            field="CONVEYOR_TOKEN_SECRET",
        )
    return state.token_secret
