"""SQLite backend for the shared fixtures: every test gets its own database file under pytest's tmp_path."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fresh_url(tmp_path: Path) -> str:
    path = (tmp_path / f"conveyor-{uuid.uuid4().hex[:12]}.db").resolve()
    return f"sqlite:///{path}"  # path is absolute, so this is sqlite:////abs/…


async def cleanup(url: str) -> None:
    from conveyor.store.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(url)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
