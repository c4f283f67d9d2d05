"""Compare what the handlers did (the side logs of fault_app.py) with what the store recorded, and count the faults.

The store is not trusted to report on itself. The side log says which runs happened (job, try, fencing token,
worker, start, end); the job's result names the run whose completion the store accepted; its attempts say what
the store recorded. From these:

- **lost** — an enqueued job the store no longer has; **stuck** — a job still pending or processing at the end;
- **duplicate completions** — a job with more than one completed attempt;
- **foreign completions** — a completion applied to a claim it did not belong to: the accepted run R was not the
  job's current claim when its completion was applied, because another run R' of the job had claimed it after R
  (a higher try, or the same try/token claimed again later, as after a claim the store forgot) and had started
  before the job's `finished_at`. Also counted: a completed attempt recorded under another worker than the run
  whose result was stored (an attempt merged into another one);
- **reused tokens** — two runs of one job under the same fencing token (the precondition of a foreign completion);
- **repeated tries** — two runs of one job under the same try number but different tokens: a claim the store
  forgot (a crash) and made again, which fencing tokens keep apart;
- **unrecorded runs** — runs with no attempt record at all (neither their own outcome nor a LOST one);
- **recovery** — for every SIGKILL of a worker: the jobs it held (a LOST attempt under its worker id, or a run of
  it that never ended) and, per job, the time from the kill to the job running again on another worker; and, per
  rescued job, how many jobs behind it in claim order started before its rerun (**overtaken**): a handful if a
  rescued job keeps its place, the rest of the backlog if it goes to the back — a measure that, unlike the times,
  does not depend on how loaded the machine is.
"""

from __future__ import annotations

import asyncio
import statistics
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.model import Attempt, AttemptOutcome, Job, JobStatus
from conveyor.store import Store


@dataclass
class Run:
    job_id: str
    try_number: int
    token: str
    worker_id: str
    pid: int
    run: str
    start: float
    end: float | None = None


def read_side_logs(directory: Path) -> dict[str, list[Run]]:
    """Every run by job id, in start order."""
    runs: dict[str, Run] = {}
    for path in sorted(directory.glob("side-*.log")):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 8:
                continue  # a line cut by a kill mid-write cannot happen with one write(2), but be safe
            kind, at, job_id, try_number, token, worker_id, pid, run_id = parts
            if kind == "S":
                runs[run_id] = Run(job_id, int(try_number), token, worker_id, int(pid), run_id, float(at))
            elif kind == "E" and run_id in runs:
                runs[run_id].end = float(at)
    by_job: dict[str, list[Run]] = defaultdict(list)
    for r in sorted(runs.values(), key=lambda r: r.start):
        by_job[r.job_id].append(r)
    return dict(by_job)


@dataclass
class Stored:
    job: Job | None
    attempts: list[Attempt]


async def snapshot(store: Store, ids: Sequence[str], concurrency: int = 64) -> dict[str, Stored]:
    """Each job and its attempts, read through the store's own API (what a user would see)."""
    out: dict[str, Stored] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(job_id: str) -> None:
        async with sem:
            job = await store.get_job(job_id)
            attempts = await store.attempts(job_id) if job is not None else []
            out[job_id] = Stored(job, attempts)

    for start in range(0, len(ids), 1000):
        await asyncio.gather(*(one(i) for i in ids[start : start + 1000]))
    return out


@dataclass(frozen=True)
class Kill:
    at: float  # time.time() of the SIGKILL
    worker_id: str
    pid: int
    leader: bool = False  # the killed worker led maintenance (the rescuer) at the time


@dataclass
class Report:
    jobs: int = 0
    completed: int = 0
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicate_completions: list[str] = field(default_factory=list)
    foreign_completions: list[str] = field(default_factory=list)
    merged_attempts: list[str] = field(default_factory=list)
    reused_tokens: list[str] = field(default_factory=list)
    repeated_tries: list[str] = field(default_factory=list)
    unrecorded_runs: list[str] = field(default_factory=list)
    completed_without_run: list[str] = field(default_factory=list)
    runs: int = 0
    kills: int = 0
    recovery: list[tuple[float, str, float]] = field(default_factory=list)  # (kill time, job, seconds to rerun)
    not_rerun: list[str] = field(default_factory=list)
    rescue_delays: list[float] = field(default_factory=list)  # kill → LOST attempt recorded, per job
    leader_rescue_delays: list[float] = field(default_factory=list)  # the same, for kills of the maintenance leader
    other_rescue_delays: list[float] = field(default_factory=list)  # and for the other kills
    overtaken: list[tuple[str, int, int]] = field(default_factory=list)
    """Per rescued job: (job, jobs behind it in claim order that started first between its rescue and its rerun,
    jobs behind it still waiting for their first start at its rescue)."""

    @property
    def worst_recovery(self) -> float | None:
        return max((d for _, _, d in self.recovery), default=None)

    leader_kills: int = 0
    per_kill: list[dict[str, Any]] = field(default_factory=list)
    """Per SIGKILL: when, whom, whether it led maintenance, how many jobs it held, their worst rescue and rerun."""

    def summary(self, lease: float) -> dict[str, Any]:
        delays = sorted(d for _, _, d in self.recovery)
        others = self.other_rescue_delays

        def q(p: float) -> float | None:
            return round(delays[min(len(delays) - 1, int(p * len(delays)))], 2) if delays else None

        return {
            "jobs": self.jobs,
            "completed": self.completed,
            "failed": len(self.failed),
            "lost": len(self.lost),
            "stuck": len(self.stuck),
            "duplicate_completions": len(self.duplicate_completions),
            "foreign_completions": len(self.foreign_completions),
            "merged_attempts": len(self.merged_attempts),
            "reused_tokens": len(self.reused_tokens),
            "repeated_tries": len(self.repeated_tries),
            "unrecorded_runs": len(self.unrecorded_runs),
            "completed_without_run": len(self.completed_without_run),
            "runs": self.runs,
            "kills": self.kills,
            "killed_jobs": len(delays),
            "not_rerun": len(self.not_rerun),
            "kill_to_rerun_s": {"p50": q(0.5), "p90": q(0.9), "max": q(1.0)},
            "kill_to_rerun_leases_max": round(delays[-1] / lease, 2) if delays else None,
            "kill_to_rescue_s_max": round(max(self.rescue_delays), 2) if self.rescue_delays else None,
            "kill_to_rescue_s_p50": round(statistics.median(self.rescue_delays), 2) if self.rescue_delays else None,
            "leader_kills": self.leader_kills,
            # The rescuer runs on the elected maintenance leader only: a kill of the leader soon after another kill
            # delays the earlier kill's rescue until a new leader is elected. Kills with no such leader kill after
            # them, and those with one, apart:
            **self._rerun_by_leader_kills(lease),
            "kill_to_rescue_s_max_leader": round(max(self.leader_rescue_delays), 2)
            if self.leader_rescue_delays
            else None,
            "kill_to_rescue_s_max_others": round(max(others), 2) if others else None,
            "overtaken_max": max((n for _, n, _ in self.overtaken), default=None),
            "behind_at_rescue_max": max((w for _, _, w in self.overtaken), default=None),
        }

    def _rerun_by_leader_kills(self, lease: float) -> dict[str, Any]:
        clean: list[float] = []
        followed: list[float] = []
        for i, k in enumerate(self.per_kill):
            rerun = k["rerun_max_s"]
            if rerun is None:
                continue
            soon = any(o["leader"] and k["at"] < o["at"] <= k["at"] + 1.5 * lease for o in self.per_kill[i + 1 :])
            (followed if soon else clean).append(rerun)
        return {
            "kill_to_rerun_s_max_alone": max(clean, default=None),
            "kill_to_rerun_s_max_before_a_leader_kill": max(followed, default=None),
        }

    def examples(self, n: int = 5) -> dict[str, list[str]]:
        named = {
            "failed": self.failed,
            "lost": self.lost,
            "stuck": self.stuck,
            "duplicate_completions": self.duplicate_completions,
            "foreign_completions": self.foreign_completions,
            "merged_attempts": self.merged_attempts,
            "reused_tokens": self.reused_tokens,
            "repeated_tries": self.repeated_tries,
            "unrecorded_runs": self.unrecorded_runs,
            "completed_without_run": self.completed_without_run,
            "not_rerun": self.not_rerun,
        }
        return {k: v[:n] for k, v in named.items() if v}


def _token(attempt: Attempt) -> str | None:
    """The fencing token an attempt record was made under, where the store records one."""
    token = getattr(attempt, "lease_token", None)
    return str(token) if token is not None else None


def _newer(other: Run, run: Run) -> bool:
    """Whether `other` claimed the job after `run` did: a higher try, or the same try/token claimed again later
    (the store forgot the first claim)."""
    if other.try_number != run.try_number:
        return other.try_number > run.try_number
    return other.start > run.start


def analyse(
    enqueued: Iterable[str],
    runs: dict[str, list[Run]],
    stored: dict[str, Stored],
    kills: Sequence[Kill] = (),
) -> Report:
    report = Report()
    ids = list(enqueued)
    report.jobs = len(ids)
    report.runs = sum(len(v) for v in runs.values())
    for job_id in ids:
        entry = stored.get(job_id)
        job_runs = runs.get(job_id, [])
        if entry is None or entry.job is None:
            report.lost.append(job_id)
            continue
        job, attempts = entry.job, entry.attempts
        if job.status is JobStatus.COMPLETED:
            report.completed += 1
        elif job.status is JobStatus.FAILED:
            report.failed.append(f"{job_id}: {job.last_error}")
        elif not job.status.is_final:
            report.stuck.append(f"{job_id}: {job.status.value} try {job.try_number} worker {job.worker_id}")
        done = [a for a in attempts if a.outcome is AttemptOutcome.COMPLETED]
        if len(done) > 1:
            tries = ", ".join(f"try {a.try_number} by {a.worker_id}" for a in done)
            report.duplicate_completions.append(f"{job_id}: {len(done)} completed attempts: {tries}")
        seen_tokens: dict[str, Run] = {}
        seen_tries: dict[int, Run] = {}
        for r in job_runs:
            first = seen_tokens.get(r.token)
            if first is not None:
                report.reused_tokens.append(
                    f"{job_id}: token {r.token} claimed by {first.worker_id} and again by {r.worker_id} "
                    f"{r.start - first.start:.2f}s later"
                )
            else:
                seen_tokens[r.token] = r
            earlier = seen_tries.get(r.try_number)
            if earlier is not None and earlier.token != r.token:
                report.repeated_tries.append(
                    f"{job_id}: try {r.try_number} claimed by {earlier.worker_id} and again by {r.worker_id} "
                    f"{r.start - earlier.start:.2f}s later, under another token"
                )
            seen_tries.setdefault(r.try_number, r)
        # Each attempt record accounts for one run: the run of its claim's token where the store records tokens,
        # else one run of its (try, worker) — runs beyond that have no record (before fencing tokens, two runs
        # under one try could have at most one: attempts were keyed by try number).
        tokens = {t for a in attempts if (t := _token(a)) is not None}
        records = Counter((a.try_number, a.worker_id) for a in attempts if _token(a) is None)
        for r in job_runs:
            key = (r.try_number, r.worker_id)
            if r.token in tokens:
                continue
            if records[key] > 0:
                records[key] -= 1
            else:
                report.unrecorded_runs.append(f"{job_id}: try {r.try_number} by {r.worker_id} (run {r.run})")
        if job.status is JobStatus.COMPLETED:
            result = job.result if isinstance(job.result, dict) else {}
            accepted = next((r for r in job_runs if r.run == result.get("run")), None)
            if accepted is None:
                report.completed_without_run.append(f"{job_id}: result {job.result!r} names no run in the side log")
                continue
            finished = job.finished_at.timestamp() if job.finished_at is not None else float("inf")
            rivals = [r for r in job_runs if r is not accepted and _newer(r, accepted) and r.start < finished]
            if rivals:
                rival = rivals[0]
                report.foreign_completions.append(
                    f"{job_id}: completion of try {accepted.try_number} (token {accepted.token}) by "
                    f"{accepted.worker_id} applied {finished - rival.start:.2f}s after try {rival.try_number} "
                    f"(token {rival.token}) had claimed it for {rival.worker_id}"
                )
            for a in done:
                token = _token(a)
                if (
                    (token is not None and token != accepted.token)
                    or a.worker_id != accepted.worker_id
                    or (a.try_number != accepted.try_number)
                ):
                    report.merged_attempts.append(
                        f"{job_id}: result of try {accepted.try_number} by {accepted.worker_id}, but the completed "
                        f"attempt says try {a.try_number} by {a.worker_id}"
                    )
    report.kills = len(kills)
    report.leader_kills = sum(1 for k in kills if k.leader)
    # Claim order is enqueue order here (one priority; run_at and UUIDv7 ids both grow as the backlog is enqueued).
    order = {job_id: i for i, job_id in enumerate(ids)}
    first_starts = sorted((rs[0].start, order[j]) for j, rs in runs.items() if rs and j in order)
    start_times = [t for t, _ in first_starts]
    for kill in kills:
        held: dict[str, float | None] = {}  # job → when the rescuer gave it back (None: not known)
        for job_id in ids:
            entry = stored.get(job_id)
            for a in entry.attempts if entry is not None else []:
                # a LOST record by the rescuer after the kill (a refused report's record is older than the kill)
                rescued = a.finished_at.timestamp()
                if a.outcome is AttemptOutcome.LOST and a.worker_id == kill.worker_id and rescued >= kill.at:
                    held[job_id] = rescued
                    report.rescue_delays.append(rescued - kill.at)
                    (report.leader_rescue_delays if kill.leader else report.other_rescue_delays).append(
                        rescued - kill.at
                    )
            for r in runs.get(job_id, []):
                if r.worker_id == kill.worker_id and r.end is None and r.start < kill.at:
                    held.setdefault(job_id, None)
        rescued_in = [t - kill.at for t in held.values() if t is not None]
        reruns: list[float] = []
        report.per_kill.append(
            {
                "at": round(kill.at, 3),
                "worker": kill.worker_id,
                "leader": kill.leader,
                "jobs": len(held),
                "rescue_max_s": round(max(rescued_in), 2) if rescued_in else None,
                "rerun_max_s": None,
            }
        )
        for job_id in sorted(held):
            later = [r.start for r in runs.get(job_id, []) if r.start > kill.at and r.worker_id != kill.worker_id]
            if later:
                reruns.append(min(later) - kill.at)
                report.per_kill[-1]["rerun_max_s"] = round(max(reruns), 2)
            if not later:
                report.not_rerun.append(f"{job_id}: held by {kill.worker_id}, never ran again after the kill")
                continue
            rerun = min(later)
            report.recovery.append((kill.at, job_id, rerun - kill.at))
            given_back = held[job_id]
            if given_back is not None and given_back < rerun:
                # Jobs behind this one in claim order that started for the first time between its rescue and its
                # rerun: a handful (claims already under way at the rescue) if it kept its place; the rest of
                # the backlog if it was sent to the back. Independent of how loaded the machine is.
                lo, hi = bisect_left(start_times, given_back), bisect_right(start_times, rerun)
                passed = sum(1 for _, o in first_starts[lo:hi] if o > order[job_id])
                waiting = sum(1 for _, o in first_starts[lo:] if o > order[job_id])
                report.overtaken.append((job_id, passed, waiting))
    return report
