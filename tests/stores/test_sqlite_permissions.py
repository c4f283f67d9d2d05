"""The SQLite database holds payloads, results and the server's auth settings: a new one is created 0600, its -wal
and -shm files and wake-up directory follow, whatever the umask; an existing file keeps its mode, with a warning."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.model import NewJob
from conveyor.store.sqlite import SQLiteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_private(path: Path) -> None:
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    assert path.exists() and wal.exists() and shm.exists()
    assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
    for entry in path.parent.iterdir():  # the wake-up directory beside it, if there is one, is private too
        if entry.is_dir():
            assert mode(entry) & 0o077 == 0, (entry, oct(mode(entry)))


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells have: files 0644 unless the program asks otherwise
    try:
        yield
    finally:
        os.umask(old)


async def test_new_database_and_its_wal_and_shm_are_private(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "private.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.enqueue([NewJob.build("t", {"secret": "payload"})])
        check_private(path)
    finally:
        await store.close()


async def test_an_existing_database_keeps_its_mode_with_a_warning(
    tmp_path: Path, loose_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    store = SQLiteStore(f"sqlite:///{path}")
    with caplog.at_level(logging.WARNING, logger="conveyor.store.sqlite"):
        await store.open()
    try:
        assert mode(path) == 0o644  # the owner chose it: not changed behind their back
        assert any(
            "readable by other users" in r.getMessage() and "chmod 600" in r.getMessage() for r in caplog.records
        )
    finally:
        await store.close()
