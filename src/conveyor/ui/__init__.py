"""The admin web UI: a single-page app served from the HTTP server at `/ui/`.

It talks only to the public REST API (`/api/v1/...`, `/api/events`) with the admin token the user pastes in, so
the UI can never do anything the API would not let the same token do. The files in `static/` are built from the
sources in the repository's `ui/` folder (Preact and uPlot bundled by esbuild: `cd ui && npm ci && npm run
build`) and committed, so `pip install` is all it takes: no Node at install or run time. CI checks the committed
files match the sources (`npm run check`). docs/choices.md says why.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount_ui(api: FastAPI, path: str = "/ui") -> None:
    """Serve the admin UI at `path/` (and redirect `path` and `/` there)."""
    api.mount(f"{path}/", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

    async def to_ui() -> RedirectResponse:
        return RedirectResponse(f"{path}/")

    api.add_api_route(path, to_ui, include_in_schema=False)
    api.add_api_route("/", to_ui, include_in_schema=False)
