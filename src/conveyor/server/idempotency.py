"""`Idempotency-Key`: a retried enqueue returns the first answer instead of enqueuing twice.

The first request reserves the key in the store's key-value space (an atomic only-if-absent set, so two API nodes
racing on one key cannot both enqueue), runs, then replaces the reservation with its answer for `ttl` seconds.
A reuse of the key with a different body is refused (422), as Stripe does; a reuse while the first request is
still running answers 409. Failed requests (4xx/5xx) release the key so the client can fix and retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse

from conveyor.errors import Conflict, ValidationError

if TYPE_CHECKING:
    from conveyor.app import Conveyor

PENDING = "__pending__"
RESERVATION_TTL = 60.0
MAX_KEY_LENGTH = 255


class IdempotencyMismatch(ValidationError):
    status_code = 422
    code = "idempotency_key_reused"


async def idempotent(
    app: Conveyor,
    key: str | None,
    scope: str,
    body: bytes,
    ttl: float,
    run: Callable[[], Awaitable[JSONResponse]],
) -> JSONResponse:
    """Run `run()` once per (scope, key); replay its answer for later requests with the same key."""
    if key is None:
        return await run()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or "\x00" in key:
        raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters", field="Idempotency-Key")
    digest = hashlib.sha256(body).hexdigest()
    kv_key = "idem:" + hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()
    store = app.store

    async def reserve() -> bool:
        return await store.kv_set(kv_key, PENDING, ttl=RESERVATION_TTL, only_if_absent=True)

    if not await app._on_home(reserve):
        stored = await app._on_home(lambda: store.kv_get(kv_key))
        if stored is None:  # expired between the two calls: try once more
            if not await app._on_home(reserve):
                raise Conflict("A request with this Idempotency-Key is in progress; retry shortly")
        elif stored == PENDING:
            raise Conflict("A request with this Idempotency-Key is in progress; retry shortly")
        else:
            saved = json.loads(stored)
            if saved["digest"] != digest:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was used with a different request body", field="Idempotency-Key"
                )
            response = JSONResponse(saved["body"], status_code=saved["status"])
            response.headers["Idempotent-Replayed"] = "true"
            return response
    try:
        response = await run()
    except BaseException:
        await app._on_home(lambda: store.kv_delete(kv_key))
        raise
    if response.status_code >= 400:
        await app._on_home(lambda: store.kv_delete(kv_key))
        return response
    saved_text = json.dumps(
        {"digest": digest, "status": response.status_code, "body": json.loads(bytes(response.body))},
        separators=(",", ":"),
    )
    await app._on_home(lambda: store.kv_set(kv_key, saved_text, ttl=ttl))
    return response
