"""`Idempotency-Key`: a retried request returns the first answer instead of enqueuing twice.

The protocol is `conveyor.idempotency.once` (shared with GS2's `X-GS2-DUPLICATION-AVOIDER`): the first request
reserves the key, runs and stores its answer for `ttl` seconds; a reuse of the key with a different body is refused
(422, as Stripe does) — "different" meaning different JSON, so the same JSON with its keys reordered is the same
request; a reuse while the first request is still running answers 409. Failed requests (4xx/5xx) release the key
so the client can fix and retry.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from conveyor.errors import ValidationError
from conveyor.idempotency import Answer, KeyReused, fingerprint_json, once
from conveyor.model import check_text

if TYPE_CHECKING:
    from conveyor.app import Conveyor

MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"

OPENAPI_HEADER: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "description": "A retried request with the same key returns the first answer instead of enqueuing "
            "twice (Idempotent-Replayed: true); the same key with a different body is refused with 422.",
        }
    ]
}
"""The header in the OpenAPI document of the enqueue routes (`openapi_extra=`): they read it from the request
themselves (`key_of`) rather than as a FastAPI `Header` parameter, which costs a dependency-solving pass per
request on the hottest routes there are."""


def key_of(request: Request) -> str | None:
    """The request's Idempotency-Key, if it sent one."""
    return request.headers.get(HEADER)


IdempotencyMismatch = KeyReused
"""The 422 answer's error (kept under its former name)."""


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
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters", field="Idempotency-Key")
    check_text(key, "Idempotency-Key")
    responses: list[JSONResponse] = []

    async def answer() -> Answer:
        response = await run()
        responses.append(response)
        return Answer(response.status_code, json.loads(bytes(response.body)))

    result = await once(app, "http:" + scope, key, answer, ttl=ttl, fingerprint=fingerprint_json(body))
    if not result.replayed:
        return responses[0]
    response = JSONResponse(result.body, status_code=result.status)
    response.headers["Idempotent-Replayed"] = "true"
    return response
