"""The PostgreSQL store: many API and worker processes on many hosts sharing one database.

Built on psycopg 3 (async) with a `psycopg_pool` pool of autocommit connections. Every state change is one SQL
statement (see queries.py), so it is atomic without explicit transactions and costs one round trip:

* claims take a batch with `FOR UPDATE SKIP LOCKED` from a partial index over pending rows, so workers never
  block each other and finished rows never slow them down;
* finishes and heartbeats of many jobs go in one statement each (arrays unnested server-side);
* enqueue inserts a whole batch from arrays; a statement trigger sends NOTIFY, which PostgreSQL delivers when the
  inserting transaction commits — also when that transaction is the caller's own (transactional enqueue);
* one dedicated connection LISTENs and wakes this process's idle workers; it reconnects by itself. Polling
  (the worker's `wait_for_jobs` timeout) stays as the fallback;
* hand-off: an enqueue made while a worker of this process waits (`offer_idle`) claims for that worker in its own
  transaction, in the same round trip, and hands it the jobs (handoff.py).

Outages: driver errors become `StoreUnavailable`; broken pooled connections are checked and replaced, and an
operation that failed on a dead connection is retried once on a fresh one.

Modules, one job each: url.py (the URL and its options), pool.py (the pool and `_run`), listen.py (LISTEN),
store.py (`PostgresStore`), enqueue.py (storing jobs, also on the caller's connection), handoff.py, copy.py (the
COPY encoder), params.py (parameter builders), rows.py (row decoders), caller.py (the caller's connection rules),
queries.py (every SQL statement) and statements.py (them filled in for one schema), migrations.py.
"""

from __future__ import annotations

from conveyor.store.postgres.store import PostgresStore
from conveyor.store.postgres.url import DEFAULT_SCHEMA, parse_url

__all__ = ["DEFAULT_SCHEMA", "PostgresStore", "parse_url"]
