"""The Redis key layout: every key the Redis store uses, in one place.

`P` is the URL's `prefix=` (default `conveyor`). `<pair>` is `<namespace>:<queue>` (names cannot contain `:`).
Times are integer microseconds since the Unix epoch, taken from Redis's `TIME` inside the scripts.

=====================================  ======  ===============================================================
key                                    type    contents
=====================================  ======  ===============================================================
P:meta                                 HASH    `schema` = layout version (written by migrate)
P:job:<id>                             HASH    the job: every field, its status *and* its lease (worker, expiry,
                                               fencing token `lease_token`) together (`timed_out_at`: set by
                                               mark_timed_out.lua)
P:att:<id>                             HASH    lease token -> attempt record (JSON, outcome first): one per claim
                                               (records from before layout 2 are under their try number)
P:pairs                                SET     every <pair> that has had jobs or settings
P:q:<pair>:ready:<task>                ZSET    claimable now, one set per task (a claim reads only the tasks it
                                               serves): score priority, member `<run_at 16 digits>:<id>` (equal
                                               scores sort by member, so the order is priority, run_at, id)
P:q:<pair>:tasks                       SET     every task that has had jobs in the pair (the ready sets to read)
P:q:<pair>:sched:<task>                ZSET    in the claim index but not yet due, one set per task: score run_at,
                                               member id
P:q:<pair>:pend                        ZSET    every pending job by run_at (the `scheduled` counts)
P:q:<pair>:s:<status>                  ZSET    the pair's jobs in that status by created (listing, newest first)
P:q:<pair>:n                           HASH    counts per `<status>|<task>` (summed per status when read)
P:qset                                 HASH    <pair> -> QueueSettings JSON (what list_queues reports)
P:qpaused                              SET     paused <pair>s            (read by claim_due)
P:qconc                                HASH    <pair> -> concurrency cap (read by claim_due)
P:qrate                                HASH    <pair> -> `<interval µs>|<tolerance µs>`: its rate limit's GCRA
                                               constants (read by claim_due; the limit itself is in qset)
P:qkey                                 HASH    <pair> -> limit of processing jobs per concurrency key (read by
                                               claim_due; the limit itself is also in qset)
P:kbusy:<pair>                         HASH    concurrency key -> its processing jobs in the pair (kept by
                                               transition in common.lua)
P:qtat                                 HASH    <pair> -> the rate limiter's theoretical arrival time, µs (claim_due
                                               advances it; absent = a full bucket)
P:qrkey                                HASH    <pair> -> its rate_key (read by claim_due: the rate limit holds per
                                               key; the setting itself is also in qset)
P:rtat:<pair>                          ZSET    rate key -> its limiter's theoretical arrival time, µs, only while
                                               that key's bucket is not full (claim_due drops passed members)
P:lane:<ns>:<serial key>               ZSET    the lane's pending jobs: score priority, member id (head first)
P:lanest:<ns>:<serial key>             HASH    `busy` = its processing job, `head` = its job in the claim index
P:uniq:<ns>                            HASH    unique_key -> id of the active job holding it
P:uniqh:<ns>                           HASH    unique hash (`unique=`) -> id of the job holding it: one with that
                                               hash whose status is among its `unique_states` (bits; both are
                                               fields of its job hash, kept by transition in common.lua)
P:user:<ns>:<user_id>                  ZSET    the user's jobs by created (list filter user_id)
P:leases                               ZSET    processing jobs by lease_expires_at (rescue)
P:done:<ns>:completed                  ZSET    completed jobs of a namespace by finished_at (prune)
P:done:<ns>:failed                     ZSET    failed and cancelled jobs of a namespace by finished_at (prune)
P:ns                                   HASH    namespace name -> Namespace JSON document
P:nsoff                                SET     namespaces whose auto_run is off (read by claim_due)
P:workers                              ZSET    worker id -> expires_at (index of the registrations)
P:w:<worker id>                        STRING  WorkerInfo JSON; expires by itself (PXAT) unless refreshed
P:kv:<key>                             STRING  key-value entries, optionally expiring
P:wake:<queue>                         LIST    wake tokens: scripts LPUSH (capped at 64), idle workers BLPOP
P:leader:<role>                        HASH    `holder`, `term` of an elected role; its key expiry is the lease
P:leaderterms                          HASH    role -> last term given (never expires: terms never repeat)
P:leadernames                          SET     every role ever held (leaders() lists the live ones)
P:cron:defs                            HASH    runtime cron schedule name -> ScheduleRecord JSON document
P:cron:runs:<schedule>                 ZSET    the schedule's run records: member and score = occurrence µs
P:cron:run:<schedule>                  HASH    occurrence µs -> ScheduleRun JSON (first record kept; the
                                               newest 200 stay; schedules.lua keeps both in step)
P:events                               channel pub/sub channel (no key): events across processes (store/redis/events.py)
=====================================  ======  ===============================================================

Invariants the scripts keep (lua/common.lua): a pending job without a serial key is in exactly one of its
pair's `ready:<its task>`/`sched:<its task>`; a lane puts only its head in them, and only while no job of the lane
is processing (`lanest.busy`). Every index is changed in the same script as the job hash, so they never drift apart.

Scripts build keys from the prefix inside Lua (they do not declare KEYS), so the store needs a single Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

DEFAULT_PREFIX = "conveyor"
SCHEMA_VERSION = "2"  # layout 2: ready and sched sets per task, P:nsoff, attempts keyed by lease token


class Keys:
    """Key names for one prefix (the Python side; the Lua side builds the same names in common.lua)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = f"{prefix}:meta"
        self.pairs = f"{prefix}:pairs"
        self.qset = f"{prefix}:qset"
        self.qpaused = f"{prefix}:qpaused"
        self.qconc = f"{prefix}:qconc"
        self.namespaces = f"{prefix}:ns"
        self.workers = f"{prefix}:workers"
        self.schedules = f"{prefix}:cron:defs"
        self.events = f"{prefix}:events"  # a pub/sub channel, not a key

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def attempts(self, job_id: str) -> str:
        return f"{self.prefix}:att:{job_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{worker_id}"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}:wake:{queue}"

    def kv(self, key: str) -> str:
        return f"{self.prefix}:kv:{key}"

    def schedule_runs(self, name: str) -> str:
        return f"{self.prefix}:cron:runs:{name}"

    def schedule_run_docs(self, name: str) -> str:
        return f"{self.prefix}:cron:run:{name}"

    def lane(self, namespace: str, serial_key: str) -> str:
        return f"{self.prefix}:lane:{namespace}:{serial_key}"


def pair(namespace: str, queue: str) -> str:
    return f"{namespace}:{queue}"
