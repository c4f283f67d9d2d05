"""Conveyor's signing keys, GS2-Key style: named, rotatable HMAC-SHA256 keys kept in the store's key-value space.

What they sign: stamp sheets and stamp tasks (`gs2_stamp`: a push or a job deletion that another service may carry
out later, exactly once) and login bodies (`Gs2AuthRestClient.login_by_signature`). Conveyor both issues and checks
every signature, so a symmetric key is enough (docs/choices.md says why not an asymmetric one).

A key has a name (unique on the store), an optional namespace it is limited to (None: any namespace), and one or
more *versions*. Each version's secret is its own kv entry, created with an atomic only-if-absent set, so two
admins rotating at once cannot lose a version. New signatures use the newest version; a signature verifies against
every live version, so sheets issued before a rotation keep working until the old version expires
(`rotate(..., keep_previous_for=...)`). The signature is plain base64 of the HMAC, as GS2's is; the `keyId` GRN
(`grn:gs2:{region}:{owner}:key:{namespace or "conveyor"}:key:{name}`) says which key to check with.

kv layout: `gs2:key:{name}` the key's record (JSON: name, namespace, description, created, newest version hint);
`gs2:key:{name}:v{n}` version n (JSON: secret, created, expires_at); `gs2:keys` the names, for listing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.errors import Conflict, NotFound, ValidationError
from conveyor.model import utcnow, validate_name

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.server.gs2_models import Grn

SERVER_KEY_NAMESPACE = "conveyor"
"""The key namespace in the GRN of a key usable for any namespace."""
MAX_VERSIONS_PROBED = 64
DEFAULT_KEEP_PREVIOUS = 24 * 3600.0


class KeyNotFound(NotFound):
    code = "key_not_found"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    secret: bytes
    created: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SigningKey:
    name: str
    namespace: str | None
    description: str
    created: datetime
    versions: tuple[KeyVersion, ...]
    """Live versions, newest first."""

    @property
    def key_namespace(self) -> str:
        return self.namespace or SERVER_KEY_NAMESPACE

    def key_id(self, grn: Grn) -> str:
        return grn.key(self.key_namespace, self.name)

    def sign(self, text: str) -> str:
        """base64 HMAC-SHA256 of `text` with the newest version."""
        return _mac(self.versions[0].secret, text)

    def verify(self, text: str, signature: str) -> bool:
        """Whether `signature` is a signature of `text` by any live version (constant-time comparisons)."""
        ok = False
        for version in self.versions:
            ok |= hmac.compare_digest(_mac(version.secret, text), signature)
        return ok

    def describe(self, grn: Grn) -> dict[str, object]:
        return {
            "name": self.name,
            "keyId": self.key_id(grn),
            "namespace": self.namespace,
            "description": self.description,
            "created": self.created.isoformat(),
            "versions": [
                {
                    "version": v.version,
                    "created": v.created.isoformat(),
                    "expires_at": None if v.expires_at is None else v.expires_at.isoformat(),
                }
                for v in self.versions
            ],
        }


def _mac(secret: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(secret, text.encode(), hashlib.sha256).digest()).decode()


def _record_key(name: str) -> str:
    return f"gs2:key:{name}"


def _version_key(name: str, version: int) -> str:
    return f"gs2:key:{name}:v{version}"


INDEX_KEY = "gs2:keys"


def _ttl(expires_at: datetime | None) -> float | None:
    if expires_at is None:
        return None
    return max(1.0, (expires_at - utcnow()).total_seconds())


async def _create_version(app: Conveyor, name: str, start: int, expires_at: datetime | None = None) -> KeyVersion:
    """A new version ≥ `start`: the first number no one else took (atomic only-if-absent per version)."""
    for number in range(max(1, start), max(1, start) + MAX_VERSIONS_PROBED):
        version = KeyVersion(number, secrets.token_bytes(32), utcnow(), expires_at)
        doc = {
            "secret": base64.b64encode(version.secret).decode(),
            "created": version.created.isoformat(),
            "expires_at": None,
        }
        if await app.akv_set(_version_key(name, number), json.dumps(doc), only_if_absent=True):
            return version
    raise Conflict(f"could not create a new version of key {name!r}; retry")


async def _read_version(app: Conveyor, name: str, number: int) -> KeyVersion | None:
    raw = await app.akv_get(_version_key(name, number))
    if raw is None:
        return None
    doc = json.loads(raw)
    expires = None if doc.get("expires_at") is None else datetime.fromisoformat(doc["expires_at"])
    if expires is not None and expires <= utcnow():
        return None
    return KeyVersion(number, base64.b64decode(doc["secret"]), datetime.fromisoformat(doc["created"]), expires)


async def create_key(app: Conveyor, name: str, *, namespace: str | None = None, description: str = "") -> SigningKey:
    """A new key (name unique on the store; Conflict if it exists). `namespace` limits it to one namespace."""
    validate_name(name, "name")
    if namespace is not None:
        validate_name(namespace, "namespace")
    if len(description) > 1024 or "\x00" in description:
        raise ValidationError("description must be at most 1024 characters without NUL", field="description")
    created = utcnow()
    record: dict[str, object] = {
        "name": name,
        "namespace": namespace,
        "description": description,
        "created": created.isoformat(),
        "current": 1,
    }
    if not await app.akv_set(_record_key(name), json.dumps(record), only_if_absent=True):
        raise Conflict(f"a signing key named {name!r} exists already; rotate it or pick another name")
    version = await _create_version(app, name, 1)
    await _index_update(app, add=name)
    return SigningKey(name, namespace, description, created, (version,))


async def get_key(app: Conveyor, name: str) -> SigningKey:
    """The key with its live versions, newest first (KeyNotFound if none)."""
    raw = await app.akv_get(_record_key(name)) if isinstance(name, str) and name else None
    if raw is None:
        raise KeyNotFound(f"no signing key named {name!r} (create one with `conveyor gs2 keys create`)")
    record = json.loads(raw)
    current = int(record.get("current", 1))
    # the hint may lag behind a concurrent rotation: look above it, then collect live versions downwards
    top = current
    while await app.akv_get(_version_key(name, top + 1)) is not None:
        top += 1
    versions: list[KeyVersion] = []
    for number in range(top, max(0, top - MAX_VERSIONS_PROBED), -1):
        version = await _read_version(app, name, number)
        if version is None:
            break
        versions.append(version)
    if not versions:
        raise KeyNotFound(f"signing key {name!r} has no live version; rotate it to make a new one")
    return SigningKey(
        record["name"], record.get("namespace"), record.get("description", ""),
        datetime.fromisoformat(record["created"]), tuple(versions),
    )  # fmt: skip


async def rotate_key(app: Conveyor, name: str, *, keep_previous_for: float = DEFAULT_KEEP_PREVIOUS) -> SigningKey:
    """A new newest version; older versions keep verifying for `keep_previous_for` seconds (0: at once no more)."""
    if not 0 <= keep_previous_for <= 366 * 86400:
        raise ValidationError("keep_previous_for must be from 0 to 366 days in seconds", field="keep_previous_for")
    key = await get_key(app, name)
    newest = await _create_version(app, name, key.versions[0].version + 1)
    until = utcnow() + timedelta(seconds=keep_previous_for)
    for old in key.versions:
        expires = until if old.expires_at is None else min(old.expires_at, until)
        if keep_previous_for == 0:
            await app.akv_delete(_version_key(name, old.version))
            continue
        doc = {
            "secret": base64.b64encode(old.secret).decode(),
            "created": old.created.isoformat(),
            "expires_at": expires.isoformat(),
        }
        await app.akv_set(_version_key(name, old.version), json.dumps(doc), ttl=_ttl(expires))
    raw = await app.akv_get(_record_key(name))
    if raw is not None:
        record = json.loads(raw)
        record["current"] = max(int(record.get("current", 1)), newest.version)
        await app.akv_set(_record_key(name), json.dumps(record))
    return await get_key(app, name)


async def delete_key(app: Conveyor, name: str) -> None:
    """Remove the key and every version: signatures made with it stop verifying at once."""
    key = await get_key(app, name)
    top = key.versions[0].version
    await app.akv_delete(_record_key(name))
    for number in range(top + MAX_VERSIONS_PROBED, 0, -1):
        await app.akv_delete(_version_key(name, number))
    await _index_update(app, remove=name)


async def list_keys(app: Conveyor) -> list[SigningKey]:
    raw = await app.akv_get(INDEX_KEY)
    names = sorted(json.loads(raw)) if raw else []
    keys = []
    for name in names:
        try:
            keys.append(await get_key(app, name))
        except KeyNotFound:
            continue
    return keys


async def _index_update(app: Conveyor, *, add: str | None = None, remove: str | None = None) -> None:
    """The names list, for listing only (keys are found by name). No compare-and-set in the kv space, so write,
    read back, and write again while a concurrent change lost ours."""
    for _ in range(10):
        raw = await app.akv_get(INDEX_KEY)
        names = set(json.loads(raw)) if raw else set()
        if add is not None:
            names.add(add)
        if remove is not None:
            names.discard(remove)
        await app.akv_set(INDEX_KEY, json.dumps(sorted(names)))
        check = set(json.loads(await app.akv_get(INDEX_KEY) or "[]"))
        if (add is None or add in check) and (remove is None or remove not in check):
            return


def key_for_id(key: SigningKey, key_id: str, grn: Grn) -> None:
    """Check that a `keyId` names this very key (namespace part included)."""
    if key.key_id(grn) != key_id:
        raise ValidationError(f"keyId {key_id!r} does not name signing key {key.name!r}", field="keyId")


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
