"""A real network partition of a worker host (issue 9, item 8), on PostgreSQL and on Redis.

Two worker "hosts" are Linux network namespaces joined to the store by veth pairs (tests/faults/netns.py); a
private PostgreSQL or Redis server (never the shared one) listens on the store side of both links. One
`conveyor worker` process runs on each host. While host h1 runs jobs, every packet to and from it is dropped for
longer than the lease; then the network heals. The test asserts, from the store and from the handlers' own side
log (tests/faults/ledger.py):

- the jobs h1 held are rescued (a LOST attempt under h1's worker id) and completed on h2;
- h1's completions of those jobs, sent after the heal, are refused (fencing) — h1 logs each one;
- h1 resumes by itself after the heal: it completes jobs enqueued afterwards, without a restart;
- nothing is lost or stuck, no job has two accepted completions, no completion lands on a foreign claim.

Namespaces need root, iproute2 and nftables; where they cannot be made the test FAILS with a message saying what is
missing (CI runs as root and scripts/services.sh installs the tools). Everything it creates lives in a Lab,
removed afterwards — and by the next run if this one is killed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.model import AttemptOutcome, JobFilter, JobStatus, NewJob
from conveyor.store import Store, open_store
from tests.faults.fault_app import TASK
from tests.faults.lab import Lab
from tests.faults.ledger import analyse, read_side_logs, snapshot
from tests.faults.netns import Host, NetLab
from tests.faults.servers import PrivatePostgres, PrivateRedis
from tests.faults.workers import WorkerProcess

pytestmark = [pytest.mark.stores("postgresql", "redis"), pytest.mark.slow, pytest.mark.timeout(360)]

LEASE = 3.0  # seconds; heartbeats every 0.5 s, rescue every 1.5 s
CUT_AT_LEAST = 2.5 * LEASE  # the partition lasts longer than the lease (and until h2 has finished h1's jobs)
JOB_SECONDS = 2.0  # phase-1 jobs: long enough to be running when the cut comes, short enough to end during it


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        errors = lab.close()
        if errors:
            print("lab cleanup errors:", *errors, sep="\n  ")


def _start_store(kind: str, lab: Lab, hosts: list[Host]) -> dict[str, str]:
    """A private server on the store side of every host's link; returns the URL each host uses."""
    addresses = [h.store_ip for h in hosts]
    if kind == "postgresql":
        pg = PrivatePostgres(lab, listen=addresses)
        pg.start()
        return {h.name: f"{pg.url(h.store_ip)}?schema=conveyor" for h in hosts}
    redis = PrivateRedis(lab, bind=addresses, appendfsync="everysec")
    redis.start()
    return {h.name: f"{redis.url(h.store_ip)}?prefix=partition" for h in hosts}


async def _until(condition: Any, timeout: float, what: str, diagnose: Any = None, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s" + (f"\n{diagnose()}" if diagnose else ""))
        await asyncio.sleep(interval)


async def _enqueue(store: Store, n: int, seconds: float, gate: str | None = None) -> list[str]:
    payload = {"s": seconds, "gate": gate}
    jobs = await store.enqueue([NewJob.build(TASK, payload, max_attempts=10) for _ in range(n)])
    return [j.id for j in jobs]


async def test_a_partitioned_worker_host_is_fenced_off_and_resumes(store_kind: str, lab: Lab) -> None:
    net = NetLab(lab)  # fails here, with what is missing, where namespaces cannot be made
    h1, h2 = net.add_host("h1"), net.add_host("h2")
    urls = _start_store(store_kind, lab, [h1, h2])
    store = open_store(urls["h2"])  # the test itself talks to the store from the machine (the store side)
    await store.open()
    w1: WorkerProcess | None = None
    w2: WorkerProcess | None = None
    try:
        id1, id2 = f"h1-{lab.id}", f"h2-{lab.id}"
        w1 = WorkerProcess(lab, urls["h1"], id1, lease=LEASE, concurrency=4, prefix=h1.argv([]))
        w2 = WorkerProcess(lab, urls["h2"], id2, lease=LEASE, concurrency=4, prefix=h2.argv([]))
        workers = (w1, w2)

        def diagnose() -> str:
            return "\n".join(
                f"--- {w.worker_id} (last lines)\n" + "\n".join(w.log().splitlines()[-25:]) for w in workers
            )

        await _until(lambda: w1.started() and w2.started(), 60, "both workers started", diagnose)

        # Phase 1: long-ish jobs; cut h1 off while it runs some of them. A rescued job's rerun (try > 1) waits
        # for the gate file, so the heal comes while h2 holds those jobs: h1's late completions then meet a claim
        # that is not theirs, which only fencing can refuse (a completed job would refuse them anyway).
        gate = lab.dir / "gate"
        ids = await _enqueue(store, 24, JOB_SECONDS, gate=str(gate))

        async def h1_running() -> list[str]:
            page = await store.list_jobs(JobFilter(status=JobStatus.PROCESSING), limit=100)
            return [j.id for j in page.items if j.worker_id == id1]

        await _until(lambda: _at_least(h1_running, 2), 60, "h1 running jobs", diagnose)
        net.cut(h1)
        cut_at = time.time()
        await asyncio.sleep(0.3)  # requests already on the wire before the cut land at the server
        held = set(await h1_running())
        assert held, "h1 held no job when it was cut off\n" + diagnose()

        async def held_jobs_rerun_on_h2() -> bool:
            jobs = [await store.get_job(i) for i in held]
            return all(j is not None and j.status is JobStatus.PROCESSING and j.worker_id == id2 for j in jobs)

        await _until(held_jobs_rerun_on_h2, 90, "h2 reruns the jobs h1 held when it was cut off", diagnose)
        await asyncio.sleep(max(0.0, cut_at + CUT_AT_LEAST - time.time()))
        assert w1.alive(), "the partitioned worker process died\n" + diagnose()
        ended_in_cut = {r.job_id for rs in read_side_logs(lab.dir / "side").values() for r in rs
                        if r.worker_id == id1 and r.job_id in held and r.end is not None}  # fmt: skip
        assert ended_in_cut, "no handler of h1 ended during the partition: nothing would test the fencing"
        net.heal(h1)
        healed_at = time.time()

        async def late_completions_refused() -> bool:
            for job_id in held:  # fail at once, and say so, if a late completion landed on h2's claim
                job = await store.get_job(job_id)
                worker = job.result.get("worker") if job is not None and isinstance(job.result, dict) else None
                assert worker != id1, f"h1's late completion of {job_id} was applied to h2's claim: {job}"
            return ended_in_cut <= set(w1.refused())

        await _until(late_completions_refused, 90, "h1's late completions refused", diagnose)
        gate.touch()

        # Phase 2: h1 must come back by itself. Keep work coming until it completes a job enqueued after the heal.
        later: list[str] = []

        async def h1_resumed() -> bool:
            later.extend(await _enqueue(store, 4, 0.5))
            for job_id in later:
                job = await store.get_job(job_id)
                if job is not None and job.status is JobStatus.COMPLETED and job.result.get("worker") == id1:
                    return True
            return False

        await _until(h1_resumed, 120, "h1 completes new work after the heal", diagnose, interval=0.5)
        everything = ids + later

        async def drained() -> bool:
            stats = await store.stats()
            return stats.pending == 0 and stats.processing == 0

        await _until(drained, 90, "every job finished", diagnose)
        for w in workers:
            assert w.stop() == 0, f"{w.worker_id} did not stop cleanly\n" + diagnose()

        runs = read_side_logs(lab.dir / "side")
        stored = await snapshot(store, everything)
        report = analyse(everything, runs, stored)
        assert not report.lost, report.lost
        assert not report.stuck, report.stuck
        assert not report.failed, report.failed
        assert not report.duplicate_completions, report.duplicate_completions
        assert not report.foreign_completions, report.foreign_completions
        assert not report.merged_attempts, report.merged_attempts
        assert report.completed == len(everything)

        for job_id in held:
            job, attempts = stored[job_id].job, stored[job_id].attempts
            assert job is not None and job.result["worker"] == id2, f"{job_id} was not completed on h2: {job}"
            lost = [a for a in attempts if a.outcome is AttemptOutcome.LOST]
            assert [a.worker_id for a in lost] == [id1], f"{job_id}: not rescued from h1 exactly once: {attempts}"
            done = [a for a in attempts if a.outcome is AttemptOutcome.COMPLETED]
            assert [a.worker_id for a in done] == [id2], f"{job_id}: completed attempts {done}"
        # h1 ran those jobs to the end during the partition, reported them after the heal, and was refused.
        assert ended_in_cut <= set(w1.refused())
        resumed = [
            i
            for i in later
            if (j := stored[i].job) is not None
            and j.result.get("worker") == id1
            and j.finished_at is not None
            and j.finished_at.timestamp() > healed_at
        ]
        assert resumed, "h1 completed nothing after the heal"
        first_back = min(stored[i].job.finished_at.timestamp() for i in resumed)  # type: ignore[union-attr]
        print(
            f"partition ({store_kind}): h1 held {len(held)} job(s) at the cut, ran {len(ended_in_cut)} of them to the "
            f"end during the {healed_at - cut_at:.1f}s partition (refused after the heal, while h2 held them); h1 "
            f"completed new work "
            f"{first_back - healed_at:.1f}s after the heal; {report.runs} runs for {report.jobs} jobs"
        )
    finally:
        for proc in (w1, w2):
            if proc is not None and proc.alive():
                proc.kill()
        await store.close()


async def _at_least(probe: Any, n: int) -> bool:
    return len(await probe()) >= n
