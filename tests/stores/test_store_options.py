"""Each built-in store's own options (store/urls.py, docs/postgres.md, sqlite.md, redis.md "Options"): read from the
URL or keyword arguments, malformed values refused naming the option and what it expects, driver parameters passed
through, and the documented list matching the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.errors import ValidationError
from conveyor.store.memory import MemoryStore
from conveyor.store.postgres import PostgresStore
from conveyor.store.postgres import url as pg_url
from conveyor.store.redis import RedisStore
from conveyor.store.redis import url as redis_url
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.store import OPTIONS as SQLITE_OPTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"
PG = "postgresql://postgres@127.0.0.1:5432/test"


def test_postgresql_reads_its_options_from_the_url_and_keywords_win() -> None:
    store = PostgresStore(f"{PG}?schema=s1&fast_worker_commits=off&listen=no&min_size=2&max_size=4&timeout=3")
    assert (store.schema, store._worker_commit, store._listen_enabled) == ("s1", "on", False)
    assert (store._min_size, store._max_size, store._timeout) == (2, 4, 3.0)
    assert "fast_worker_commits" not in store.conninfo and "schema" not in store.conninfo
    again = PostgresStore(f"{PG}?fast_worker_commits=off", fast_worker_commits=True)
    assert again._worker_commit == "off"  # the keyword (fast commits) wins over the URL


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("fast_worker_commit=off", "fast_worker_commit"),  # misspelt
        ("fast_worker_commits=maybe", "fast_worker_commits"),
        ("max_size=0", "max_size"),
        ("timeout=-1", "timeout"),
        ("listen=", "listen"),
        ("schema=a-b", "schema"),
        ("min_size=5&max_size=2", "min_size"),
    ],
)
def test_postgresql_refuses_a_bad_option_naming_it(query: str, named: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(named)):
        PostgresStore(f"{PG}?{query}")


def test_postgresql_passes_libpq_parameters_through() -> None:
    store = PostgresStore(f"{PG}?sslmode=disable&application_name=x&fast_worker_commits=on", connect_timeout=3)
    assert "sslmode=disable" in store.conninfo and "application_name=x" in store.conninfo
    assert store.options == {"connect_timeout": 3}
    with pytest.raises(ValidationError, match="not_libpq"):
        PostgresStore(PG, not_libpq=1)


def test_sqlite_refuses_a_bad_option_naming_it(tmp_path: Path) -> None:
    base = f"sqlite:///{tmp_path}/x.db"
    assert SQLiteStore(f"{base}?synchronous=full").synchronous == "FULL"
    assert SQLiteStore(f"{base}?synchronous=full", synchronous="OFF").synchronous == "OFF"
    for query, named in [
        ("synchronus=FULL", "synchronus"),
        ("synchronous=sometimes", "synchronous"),
        ("busy_timeout=soon", "busy_timeout"),
        ("cache_size_kib=0", "cache_size_kib"),
        ("synchronous=", "synchronous"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(named)):
            SQLiteStore(f"{base}?{query}")


def test_redis_reads_its_options_and_passes_redis_py_parameters_through() -> None:
    store = RedisStore("redis://127.0.0.1:6379/0?prefix=p&socket_timeout=2&wake_block=0.5&health_check_interval=3")
    assert (store.prefix, store._socket_timeout, store._wake_block) == ("p", 2.0, 0.5)
    assert store._redis_url == "redis://127.0.0.1:6379/0?health_check_interval=3"
    for query, named in [
        ("socket_timeut=2", "socket_timeut"),
        ("socket_timeout=soon", "socket_timeout"),
        ("max_connections=0", "max_connections"),
        ("decode_responses=false", "decode_responses"),  # the store's own wire format: not the caller's to change
    ]:
        with pytest.raises(ValidationError, match=re.escape(named)):
            RedisStore(f"redis://127.0.0.1:6379/0?{query}")
    with pytest.raises(ValidationError, match="pool_size"):
        RedisStore("redis://127.0.0.1:6379/0", pool_size=3)


def test_the_memory_store_takes_no_options() -> None:
    with pytest.raises(ValidationError, match="valid options: none"):
        MemoryStore("memory://x?anything=1")


@pytest.mark.parametrize(
    ("doc", "options"),
    [
        ("postgres.md", pg_url.OPTIONS),
        ("sqlite.md", SQLITE_OPTIONS),
        ("redis.md", {**redis_url.OPTIONS, "prefix": None}),
    ],
)
def test_the_docs_list_every_option(doc: str, options: dict[str, object]) -> None:
    text = (DOCS / doc).read_text()
    section = text[text.index("## Options") :]
    missing = [name for name in options if f"`{name}`" not in section]
    assert not missing, f"docs/{doc} '## Options' does not list {missing}"
