"""Conveyor's HTTP server: the PocketBase job API, Conveyor's own API, per-user Run, SSE events, webhooks,
metrics and the demo endpoint (FastAPI on uvicorn). See docs/http-api.md.

`create_app(conveyor_app, ...)` builds the ASGI app; `serve(url, ...)` runs it with workers until SIGTERM.
"""

from __future__ import annotations

from conveyor.server.auth import Principal, ServerAuth, aissue_user_token
from conveyor.server.factory import create_app
from conveyor.server.runner import build_server, serve

__all__ = ["Principal", "ServerAuth", "aissue_user_token", "build_server", "create_app", "serve"]
