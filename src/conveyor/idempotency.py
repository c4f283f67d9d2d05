"""Run a request once per key: the one idempotency protocol behind every API that takes a retry key (the HTTP
API's `Idempotency-Key`, GS2's `X-GS2-DUPLICATION-AVOIDER`).

The first request reserves the key in the store's key-value space (`Store.kv_setdefault`: reserve-or-read in one
atomic step, so two API nodes racing on one key cannot both run), runs, then replaces the reservation with its
answer for `ttl` seconds; later requests with the key get that answer back. A request that fails (raises, or
answers 4xx/5xx) releases the key so the client can fix and retry. A reuse while the first is still running raises
`InProgress`.

When a `fingerprint` is given, a reuse with a different one raises `KeyReused` (Stripe's rule: one key, one
request). `fingerprint_json` makes it from the request's *meaning*: canonical JSON (keys sorted, no whitespace),
so the same JSON with its keys in another order is the same request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conveyor.errors import Conflict, ValidationError
from conveyor.model import JSON
from conveyor.runtime import SupportsRuntime

_PENDING = "__pending__"
RESERVATION_TTL = 300.0
"""How long a reservation holds while its request runs (a crashed API node frees the key after this)."""


class InProgress(Conflict):
    """A request with this key is still running."""


class KeyReused(ValidationError):
    """The key was used before with a different request."""

    status_code = 422
    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: JSON
    replayed: bool = False


def fingerprint_json(body: bytes) -> str:
    """A digest of a JSON body's meaning (canonical form: sorted keys, compact); of the bytes when it is not JSON."""
    try:
        value = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        return "raw:" + hashlib.sha256(body).hexdigest()
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "json:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


async def once(
    app: SupportsRuntime,
    scope: str,
    key: str,
    run: Callable[[], Awaitable[Answer]],
    *,
    ttl: float,
    fingerprint: str | None = None,
) -> Answer:
    """Run `run()` once per (scope, key) and replay its answer (status < 400) to later calls; see the module doc."""
    kv_key = "idem:" + hashlib.sha256(f"{scope}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()
    rt = app.runtime
    store = rt.store
    # Reserve and read in one atomic step (Store.kv_setdefault): no window in which the reservation can expire or
    # be taken between the two, so two requests with one key can never both run.
    stored, reserved = await rt.on_home(lambda: store.kv_setdefault(kv_key, _PENDING, ttl=RESERVATION_TTL))
    if not reserved:
        if stored == _PENDING:
            raise InProgress("A request with this key is in progress; retry shortly")
        saved = json.loads(stored)
        if fingerprint is not None and saved.get("fingerprint") not in (None, fingerprint):
            raise KeyReused("This idempotency key was used with a different request", field="Idempotency-Key")
        return Answer(saved["status"], saved["body"], replayed=True)
    try:
        answer = await run()
    except BaseException:
        await rt.on_home(lambda: store.kv_delete(kv_key))
        raise
    if answer.status >= 400:
        await rt.on_home(lambda: store.kv_delete(kv_key))
        return answer
    text = json.dumps(
        {"fingerprint": fingerprint, "status": answer.status, "body": answer.body},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    await rt.on_home(lambda: store.kv_set(kv_key, text, ttl=ttl))
    return answer
