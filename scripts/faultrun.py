#!/usr/bin/env python3
"""Fault-injection run: a backlog, worker processes killed with SIGKILL at random, the store crash-restarted
mid-run — then an audit of what the store did against what the handlers did. See docs/faults.md.

    .venv/bin/python scripts/faultrun.py                     # every store, 15,000 jobs each
    .venv/bin/python scripts/faultrun.py --store postgresql --jobs 3000 --json out.json

Per store: a private server (PostgreSQL cluster or redis-server with appendonly, on free ports; the machine's shared
servers are never touched) or a SQLite file, a backlog of `--jobs` jobs (each sleeps a random 100-300 ms and writes
its start and end to a side log), `--workers` `conveyor worker --lease 10` processes. Every 5-10 s (counted once all
are up) a random worker gets SIGKILL and is started again under a new id. Once `--crash-at` of the backlog is done
the store server crashes and restarts (PostgreSQL: `pg_ctl restart -m immediate`; Redis: kill -9 and restart on its
AOF; SQLite has no server: the SIGKILLs of the workers that write it are its crashes). After the backlog has
drained the workers stop gracefully, and the ledger (tests/faults/ledger.py) reports jobs lost, stuck and failed,
duplicate and foreign completions, fencing tokens claimed twice, runs without an attempt record, completions the
workers saw refused, the time from each kill to the killed worker's jobs running again, and how many jobs behind a
rescued job overtook it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.faults.harness import STORES, Options, run_store  # noqa: E402


def _table(results: list[dict[str, Any]]) -> str:
    cols = [
        ("store", "store"),
        ("jobs", "jobs"),
        ("lost", "lost"),
        ("stuck", "stuck"),
        ("failed", "failed"),
        ("foreign", "foreign_completions"),
        ("dup", "duplicate_completions"),
        ("merged", "merged_attempts"),
        ("token reused", "reused_tokens"),
        ("try repeated", "repeated_tries"),
        ("unrecorded runs", "unrecorded_runs"),
        ("refused", "refused_completions"),
        ("kills", "kills"),
        ("killed jobs", "killed_jobs"),
        ("exited unasked", "workers_exited_unasked"),
    ]
    head = [c for c, _ in cols] + ["kill→rerun p50/max s", "max leases", "kill→rescue max s", "overtaken max", "run s"]
    rows = []
    for r in results:
        s = r["summary"]
        k = s["kill_to_rerun_s"]
        rows.append(
            [str(s[key]) for _, key in cols]
            + [
                f"{k['p50']}/{k['max']}",
                str(s["kill_to_rerun_leases_max"]),
                str(s["kill_to_rescue_s_max"]),
                str(s["overtaken_max"]),
                str(s["seconds"]),
            ]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=(*STORES, "all"), default="all")
    parser.add_argument("--jobs", type=int, default=15_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(5.0, 10.0), metavar=("MIN", "MAX"))
    parser.add_argument("--job-seconds", type=float, nargs=2, default=(0.1, 0.3), metavar=("MIN", "MAX"))
    parser.add_argument("--crash-at", type=float, default=0.4, help="fraction of the backlog done when the store "
                        "crashes (>1: never)")  # fmt: skip
    parser.add_argument("--redis-appendfsync", choices=("always", "everysec", "no"), default="everysec")
    parser.add_argument("--pg-fsync", choices=("on", "off"), default="on")
    parser.add_argument("--no-fast-worker-commits", action="store_true", help="PostgreSQL: durable worker commits")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per store before giving up")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every result (and examples) here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(asctime)s %(name)s: %(message)s")  # driver warnings
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    options = Options(
        jobs=args.jobs,
        workers=args.workers,
        concurrency=args.concurrency,
        lease=args.lease,
        kill_every=tuple(args.kill_every),
        job_seconds=tuple(args.job_seconds),
        crash_at=args.crash_at,
        redis_appendfsync=args.redis_appendfsync,
        pg_fsync=args.pg_fsync == "on",
        pg_fast_worker_commits=not args.no_fast_worker_commits,
        timeout=args.timeout,
        seed=seed,
    )
    stores = STORES if args.store == "all" else (args.store,)
    print(f"faultrun: seed {seed}; {options}", flush=True)
    results = []
    for kind in stores:
        rng = random.Random(f"{seed}-{kind}")
        results.append(asyncio.run(run_store(kind, options, rng)))
        print(json.dumps(results[-1]["summary"], indent=1), flush=True)
        for name, examples in results[-1]["examples"].items():
            print(f"  {name}:", *examples, sep="\n    ", flush=True)
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"seed": seed, "options": vars(options), "results": results}, indent=1))
    bad = [r["summary"]["store"] for r in results if any(r["summary"][k] for k in
           ("lost", "stuck", "foreign_completions", "duplicate_completions", "workers_exited_unasked"))]  # fmt: skip
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
