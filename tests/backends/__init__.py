"""Each store's test backend: a base URL on this machine's servers (fresh spaces come from the store itself,
`conveyor.store.isolated_url` + `Store.drop`), and what only a test needs: snapshot/restore (a crash of the store that
loses its last writes) and make_schema_newer (a store migrated by a newer Conveyor)."""

from __future__ import annotations

import uuid
from pathlib import Path

from conveyor.store import isolated_url

LABEL_PREFIX = "cv_"
"""Every test space's label starts so (a leftover is easy to recognise on the shared servers)."""


def isolated(base: str, tmp_path: Path) -> str:
    """A URL naming a new, empty, isolated space of `base`'s store."""
    return isolated_url(base, f"{LABEL_PREFIX}{uuid.uuid4().hex[:16]}", tmp_path)
