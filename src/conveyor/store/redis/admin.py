"""The Redis store's inspection and management calls (`RedisStore` inherits them; see store.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from conveyor.codec import STORED_JOB_FIELDS
from conveyor.errors import (
    InvalidTransition,
    JobNotFound,
    NamespaceExists,
    NamespaceNotFound,
    RevisionConflict,
    ValidationError,
)
from conveyor.model import (
    DEFAULT_NAMESPACE,
    DEFAULT_NAMESPACE_SETTINGS,
    KEEP,
    SCHEDULE_RUNS_KEPT,
    Attempt,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Leadership,
    Namespace,
    Page,
    QueueChange,
    QueueInfo,
    QueueSettings,
    RateState,
    ScheduleRecord,
    ScheduleRun,
    Stats,
    WorkerInfo,
    attempt_order,
    check_queue_settings,
    job_sort_key,
    occurrence_us,
    utcnow,
)
from conveyor.store.base import check_after, check_restore, stats_from_counts
from conveyor.store.documents import worker_from_json, worker_to_json
from conveyor.store.redis.connections import RedisConnections
from conveyor.store.redis.encoding import (
    STATUS_VALUES,
    decode_attempt,
    decode_job,
    decode_queue_settings,
    decode_rate,
    dumps,
    encode_attempt,
    encode_rate,
    text_or_empty,
    to_us,
)
from conveyor.store.redis.keys import pair

__all__ = ["RedisAdmin", "as_dict", "glob_escape"]

log = logging.getLogger("conveyor.store.redis")


class RedisAdmin(RedisConnections):
    """Inspection and management of the Redis store: reading and changing jobs one at a time, namespaces, queue
    settings, the worker registry, leader election and the key-value keys (each one script or one command)."""

    # ---- inspection and management --------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        fields = await self._do(lambda c: c.hgetall(self.keys.job(job_id)))
        if not fields:
            return None
        return decode_job(as_dict(fields))

    async def list_jobs(
        self,
        filter: JobFilter,
        limit: int = 20,
        offset: int = 0,
        *,
        after: JobKey | None = None,
        sort: JobSort = JobSort.CREATED_DESC,
    ) -> Page[Job]:
        sort = JobSort(sort)
        check_after(after, sort)
        offset = max(0, offset)
        limit = max(0, limit)
        base = [
            text_or_empty(filter.namespace),
            text_or_empty(filter.queue),
            text_or_empty(filter.task),
            text_or_empty(None if filter.status is None else JobStatus(filter.status).value),
            text_or_empty(filter.user_id),
            limit,
            offset,
        ]
        if filter.ids is not None or filter.searches or sort.field != "created":
            # No secondary index serves these (payload text, JSON paths, other orders): the candidates of the
            # exact filters are read and filtered here, O(candidates) — see docs/redis.md.
            reply = await self._run("list", [*base, "ids", "", "", *STATUS_VALUES])
            return await self._list_scanned(list(reply[1]), filter, limit, offset, after, sort)
        seek = ["", ""] if after is None else [str(to_us(after.value)), after.id]  # type: ignore[arg-type]
        order = "desc" if sort.descending else "asc"
        reply = await self._run("list", [*base, order, *seek, *STATUS_VALUES])
        items = [decode_job(h) for h in json.loads(reply[1])]
        more = bool(int(reply[2])) and bool(items)
        return Page(
            items=items,
            total=int(reply[0]),
            limit=limit,
            offset=offset,
            next=JobKey.of(items[-1], sort) if more else None,
        )

    async def _list_ids(self, flt: JobFilter, limit: int, offset: int) -> Page[Job]:
        ids = list(dict.fromkeys(flt.ids or ()))

        async def fetch(c: aioredis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            return list(await pipe.execute())

        found = [decode_job(as_dict(fields)) for fields in await self._do(fetch) if fields]
        matched = [
            j
            for j in found
            if (flt.namespace is None or j.namespace == flt.namespace)
            and (flt.queue is None or j.queue == flt.queue)
            and (flt.task is None or j.task == flt.task)
            and (flt.status is None or j.status == flt.status)
            and (flt.user_id is None or j.user_id == flt.user_id)
        ]
        matched.sort(key=lambda j: (j.created, j.id), reverse=True)
        return Page(items=matched[offset : offset + limit], total=len(matched), limit=limit, offset=offset)

    async def attempts(self, job_id: str) -> list[Attempt]:
        records: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.attempts(job_id)))
        return sorted((decode_attempt(text, field) for field, text in records.items()), key=attempt_order)

    async def _stat_rows(self, namespace: str | None, queue: str | None, task: str | None) -> list[list[Any]]:
        rows: list[list[Any]] = await self._run(
            "stats", [text_or_empty(namespace), text_or_empty(queue), text_or_empty(task), *STATUS_VALUES]
        )
        return rows

    async def stats(self, namespace: str | None = None, queue: str | None = None, task: str | None = None) -> Stats:
        totals = [0] * (len(STATUS_VALUES) + 1)
        for row in await self._stat_rows(namespace, queue, task):
            for i in range(len(totals)):
                totals[i] += int(row[1 + i])
        by = dict(zip([*STATUS_VALUES, "scheduled"], totals, strict=True))
        return stats_from_counts(by, by["scheduled"])

    async def _change(self, name: str, job_id: str, *extra: Any) -> tuple[str, Any]:
        reply = await self._run(name, [job_id, *extra])
        kind = reply[0]
        if kind == "missing":
            raise JobNotFound(job_id)
        if kind == "ok":
            return kind, json.loads(reply[1])
        return kind, reply[1] if len(reply) > 1 else None

    async def cancel(self, job_id: str) -> Job:
        kind, value = await self._change("cancel", job_id)
        if kind == "invalid":
            raise InvalidTransition(
                f"Job cannot be cancelled (must be in 'pending' or 'processing' status; it is {value!r})"
            )
        return decode_job(value)

    async def requeue(self, job_id: str) -> Job:
        job = await self.get_job(job_id)
        kind, value = await self._change("requeue", job_id)
        if kind == "invalid":
            raise InvalidTransition("Job cannot be requeued (must be in 'failed' status)")
        if kind == "unique":
            key = job.unique_key if job is not None else None
            raise InvalidTransition(f"Job cannot be requeued: active job {value} holds its unique key {key!r}")
        self._waker.notify()
        return decode_job(value)

    async def delete(self, job_id: str, *, force: bool = False) -> Job:
        kind, value = await self._change("delete", job_id, "1" if force else "0")
        if kind == "invalid":
            raise InvalidTransition("Job cannot be deleted (must be in 'pending' or 'failed' status)")
        self._waker.notify()
        return decode_job(value)

    async def run_now(self, job_id: str) -> Job:
        kind, value = await self._change("run_now", job_id)
        if kind == "invalid":
            raise InvalidTransition(f"Job cannot be run now (must be in 'pending' status; it is {value!r})")
        self._waker.notify()
        return decode_job(value)

    async def _list_scanned(
        self, candidates: list[Any], flt: JobFilter, limit: int, offset: int, after: JobKey | None, sort: JobSort
    ) -> Page[Job]:
        ids = [c.decode() if isinstance(c, bytes) else str(c) for c in candidates]
        if flt.ids is not None:
            wanted = frozenset(flt.ids)
            ids = [i for i in ids if i in wanted]
        now = utcnow()
        matched: list[Job] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]

            async def fetch(c: aioredis.Redis, chunk: list[str] = chunk) -> list[Any]:
                pipe = c.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hgetall(self.keys.job(job_id))
                return list(await pipe.execute())

            for fields in await self._do(fetch):
                if fields:
                    job = decode_job(as_dict(fields))
                    if flt.matches(job, now):
                        matched.append(job)
        matched.sort(key=lambda j: job_sort_key(j, sort), reverse=sort.descending)
        following = matched if after is None else [j for j in matched if after.precedes(j)]
        page = following[offset : offset + limit]
        more = len(following) > offset + len(page) and bool(page)
        return Page(
            items=page, total=len(matched), limit=limit, offset=offset, next=JobKey.of(page[-1], sort) if more else None
        )

    async def restore_jobs(self, jobs: Sequence[Job], attempts: Sequence[Attempt] = ()) -> list[Job]:
        records = check_restore(jobs, attempts)
        if not records:
            return []
        by_job: dict[str, list[str]] = {}
        for a in attempts:
            by_job.setdefault(a.job_id, []).extend([a.lease_token or str(a.try_number), encode_attempt(a)])
        rows = [
            {
                "id": j.id,
                "namespace": j.namespace,
                "status": j.status.value,
                "unique": None if j.unique_key is None or j.status.is_final else j.unique_key,
                "fields": _hash_fields(j),
                "attempts": by_job.get(j.id, []),
            }
            for j in records
        ]
        reply = await self._run("restore", [json.dumps(rows)])
        kind = _text(reply[0])
        if kind == "exists":
            raise ValidationError(f"a job with one of these ids already exists: {_text(reply[1])}", field="id")
        if kind == "unique":
            raise ValidationError(
                f"job {_text(reply[1])}: active job {_text(reply[2])} holds its unique key", field="unique_key"
            )
        if any(j.status is JobStatus.PENDING for j in records):
            self._waker.notify()
        return [j for j in [await self.get_job(j.id) for j in records] if j is not None]

    async def delete_user_data(self, user_id: str) -> int:
        return int(await self._run("delete_user", [user_id]))

    async def has_pending_job(self, namespace: str, user_id: str) -> bool:
        key = self.keys.lane(namespace, f"u:{user_id}")
        return bool(await self._do(lambda c: c.exists(key)))

    # ---- namespaces ------------------------------------------------------------------------------------------

    async def create_namespace(self, namespace: Namespace) -> Namespace:
        """put_namespace.lua's compare-and-set with "absent" expected: an atomic create."""
        if namespace.name == DEFAULT_NAMESPACE:  # exists whether stored or not
            raise NamespaceExists(namespace.name)
        stored = replace(namespace, extra=dict(namespace.extra))
        doc = json.dumps(stored.to_dict())
        if not await self._run("put_namespace", [stored.name, "", doc, "1" if stored.auto_run else "0"]):
            raise NamespaceExists(stored.name)
        return stored

    async def put_namespace(self, namespace: Namespace, *, expected_revision: int | None = None) -> Namespace:
        """Create or replace with a compare-and-set loop (put_namespace.lua) so concurrent replaces each get their
        own revision; with `expected_revision`, the loop ends in RevisionConflict as soon as the revision moved."""
        while True:
            current: str | None = await self._do(lambda c: c.hget(self.keys.namespaces, namespace.name))
            old = None if current is None else Namespace.from_dict(json.loads(current))
            if expected_revision is not None:
                if old is None and namespace.name == DEFAULT_NAMESPACE:
                    old = DEFAULT_NAMESPACE_SETTINGS  # never stored: revision 0 (the script still expects absent)
                if old is None:
                    raise NamespaceNotFound(namespace.name)
                if old.revision != expected_revision:
                    raise RevisionConflict(namespace.name, expected_revision, old.revision)
            stored = replace(namespace, extra=dict(namespace.extra))
            if old is not None:
                stored = replace(stored, created=old.created, updated=utcnow(), revision=old.revision + 1)
            doc = json.dumps(stored.to_dict())
            ok = await self._run(
                "put_namespace", [namespace.name, text_or_empty(current), doc, "1" if stored.auto_run else "0"]
            )
            if ok:
                return stored

    async def get_namespace(self, name: str) -> Namespace | None:
        doc = await self._do(lambda c: c.hget(self.keys.namespaces, name))
        if doc is None:
            return DEFAULT_NAMESPACE_SETTINGS if name == DEFAULT_NAMESPACE else None
        return Namespace.from_dict(json.loads(doc))

    async def list_namespaces(self) -> list[Namespace]:
        docs: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.namespaces))
        found = {name: Namespace.from_dict(json.loads(doc)) for name, doc in docs.items()}
        found.setdefault(DEFAULT_NAMESPACE, DEFAULT_NAMESPACE_SETTINGS)
        return [found[name] for name in sorted(found)]

    async def delete_namespace(self, name: str) -> bool:
        if name == DEFAULT_NAMESPACE:
            raise ValidationError("the namespace 'default' always exists and cannot be deleted", field="name")
        return bool(await self._run("delete_namespace", [name]))

    # ---- queues ----------------------------------------------------------------------------------------------

    async def put_queue_settings(self, settings: QueueSettings) -> QueueSettings:
        check_queue_settings(settings)
        change = QueueChange(
            paused=settings.paused,
            concurrency=settings.concurrency,
            rate_limit=settings.rate_limit,
            key_concurrency=settings.key_concurrency,
            rate_key=settings.rate_key,
        )
        return await self.update_queue_settings(settings.namespace, settings.name, change)

    async def update_queue_settings(self, namespace: str, queue: str, change: QueueChange) -> QueueSettings:
        """One script (queue_settings.lua) reads the stored document, applies the change and writes every view the
        claim reads (qpaused, qconc, qrate) together."""
        check_queue_settings(change.apply(QueueSettings(namespace, queue)))
        args = [
            pair(namespace, queue),
            queue,
            "" if change.paused is KEEP else ("1" if change.paused else "0"),
            "" if change.concurrency is KEEP else ("-" if change.concurrency is None else str(change.concurrency)),
            "" if change.rate_limit is KEEP else encode_rate(change.rate_limit),
            ""
            if change.key_concurrency is KEEP
            else ("-" if change.key_concurrency is None else str(change.key_concurrency)),
            "" if change.rate_key is KEEP else ("-" if change.rate_key is None else "=" + change.rate_key),
        ]
        doc = await self._run("queue_settings", args)
        self._waker.notify()  # a resumed queue or a raised limit may free jobs
        return decode_queue_settings(namespace, queue, doc)

    async def get_queue_settings(self, namespace: str, queue: str) -> QueueSettings:
        doc = await self._do(lambda c: c.hget(self.keys.qset, pair(namespace, queue)))
        return QueueSettings(namespace, queue) if doc is None else decode_queue_settings(namespace, queue, doc)

    async def list_queues(self, namespace: str | None = None) -> list[QueueInfo]:
        out: list[QueueInfo] = []
        n = len(STATUS_VALUES)
        docs: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.qset))
        for row in await self._stat_rows(namespace, None, None):
            ns, q = str(row[0]).split(":", 1)
            counts = {s: int(row[1 + i]) for i, s in enumerate(STATUS_VALUES)}
            counts["scheduled"] = int(row[1 + n])
            concurrency = int(row[3 + n])
            doc = json.loads(docs[str(row[0])]) if str(row[0]) in docs else None
            out.append(
                QueueInfo(
                    namespace=ns,
                    name=q,
                    paused=bool(int(row[2 + n])),
                    counts=counts,
                    concurrency=None if concurrency < 0 else concurrency,
                    rate_limit=None if doc is None else decode_rate(doc),
                    key_concurrency=None
                    if doc is None or doc.get("key_concurrency") is None
                    else int(doc["key_concurrency"]),
                    rate_key=None if doc is None else doc.get("rate_key"),
                )
            )
        out.sort(key=lambda qi: (qi.namespace, qi.name))
        return out

    async def rate_state(self, namespace: str, queue: str, limit: int = 10) -> RateState:
        now, tat, count, flat = await self._run("rate_state", [pair(namespace, queue), str(max(0, limit))])
        keys = [(str(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        return RateState(int(now), None if tat is None else int(tat), int(count), keys)

    # ---- workers ---------------------------------------------------------------------------------------------

    async def register_worker(self, info: WorkerInfo) -> None:
        """The registration is a key that Redis expires by itself: a killed worker leaves nothing behind."""
        expires_ms = to_us(info.expires_at) // 1000

        async def write(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.set(self.keys.worker(info.id), worker_to_json(info), pxat=max(1, expires_ms))
            pipe.zadd(self.keys.workers, {info.id: expires_ms})
            await pipe.execute()

        await self._do(write)

    async def unregister_worker(self, worker_id: str) -> None:
        async def drop(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

        await self._do(drop)

    async def list_workers(self) -> list[WorkerInfo]:
        async def read(c: aioredis.Redis) -> list[WorkerInfo]:
            ids = [str(i) for i in await c.zrange(self.keys.workers, 0, -1)]
            if not ids:
                return []
            docs: list[Any] = list(await c.mget([self.keys.worker(i) for i in ids]))
            gone = [i for i, d in zip(ids, docs, strict=True) if d is None]
            if gone:
                await c.zrem(self.keys.workers, *gone)
            now = utcnow()
            live = [worker_from_json(d) for d in docs if d is not None]
            return sorted((w for w in live if w.expires_at > now), key=lambda w: (w.started_at, w.id))

        workers: list[WorkerInfo] = await self._do(read)
        return workers

    # ---- leader election ---------------------------------------------------------------------------------------

    async def elect(self, name: str, candidate: str, ttl: float) -> Leadership:
        reply = await self._run("elect", ["elect", name, candidate, max(1, int(ttl * 1000))])
        took, holder, term, left = reply
        return Leadership(name, holder, int(term), int(left) / 1000, held=int(took) == 1 and holder == candidate)

    async def resign(self, name: str, candidate: str) -> None:
        await self._run("elect", ["resign", name, candidate])

    async def leaders(self) -> list[Leadership]:
        flat = await self._run("elect", ["list"])
        found = [
            Leadership(flat[i], flat[i + 1], int(flat[i + 2]), int(flat[i + 3]) / 1000) for i in range(0, len(flat), 4)
        ]
        return sorted(found, key=lambda role: role.name)

    # ---- key-value -------------------------------------------------------------------------------------------

    async def kv_get(self, key: str) -> str | None:
        value: str | None = await self._do(lambda c: c.get(self.keys.kv(key)))
        return value

    async def kv_set(self, key: str, value: str, *, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        px = None if ttl is None else max(1, int(ttl * 1000))
        result = await self._do(lambda c: c.set(self.keys.kv(key), value, px=px, nx=only_if_absent))
        return bool(result)

    async def kv_setdefault(self, key: str, value: str, *, ttl: float | None = None) -> tuple[str, bool]:
        px = "" if ttl is None else str(max(1, int(ttl * 1000)))
        stored, put = await self._run("kv_setdefault", [key, value, px])
        return str(stored), bool(int(put))

    async def kv_delete(self, key: str) -> None:
        await self._do(lambda c: c.delete(self.keys.kv(key)))

    # ---- cron schedules (lua/schedules.lua) ------------------------------------------------------------------

    async def put_schedule(self, record: ScheduleRecord, *, create: bool) -> bool:
        op = "create" if create else "update"
        return bool(int(await self._run("schedules", [op, record.name, record.to_doc()])))

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        doc: str | None = await self._do(lambda c: c.hget(self.keys.schedules, name))
        return None if doc is None else ScheduleRecord.from_doc(doc)

    async def list_schedules(self) -> list[ScheduleRecord]:
        docs: dict[str, str] = await self._do(lambda c: c.hgetall(self.keys.schedules))
        return [ScheduleRecord.from_doc(docs[name]) for name in sorted(docs)]

    async def delete_schedule(self, name: str) -> bool:
        return bool(int(await self._run("schedules", ["delete", name])))

    async def record_schedule_run(self, run: ScheduleRun, *, keep: int = SCHEDULE_RUNS_KEPT) -> bool:
        args = ["run", run.schedule, str(occurrence_us(run.occurrence)), run.to_doc(), str(max(1, keep))]
        return bool(int(await self._run("schedules", args)))

    async def schedule_runs(self, name: str, limit: int = 20) -> list[ScheduleRun]:
        if limit <= 0:
            return []

        async def read(c: aioredis.Redis) -> list[Any]:
            members = [str(m) for m in await c.zrevrange(self.keys.schedule_runs(name), 0, limit - 1)]
            if not members:
                return []
            return list(await c.hmget(self.keys.schedule_run_docs(name), members))

        return [ScheduleRun.from_doc(doc) for doc in await self._do(read) if doc is not None]


def glob_escape(text: str) -> str:
    """`text` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def as_dict(reply: Any) -> dict[str, str]:
    """HGETALL answers a dict (RESP3 / response callbacks) or a flat list, depending on protocol and version."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))


def _hash_fields(job: Job) -> list[str]:
    """A job's hash fields as the scripts keep them (flat field, value list): every stored field but `status`,
    which restore.lua sets through its index bookkeeping; None fields and false flags are absent."""
    out: list[str] = []
    for f in STORED_JOB_FIELDS:
        if f.name == "status":
            continue
        v = getattr(job, f.name)
        if f.name == "payload":
            text = job.payload_json if job.payload_json is not None else dumps(v)
            out += ["payload", text]
        elif v is None or v is False:
            continue
        elif f.kind == "json":
            out += [f.name, dumps(v)]
        elif f.kind == "time":
            out += [f.name, str(to_us(v))]
        elif f.kind == "bool":
            out += [f.name, "1"]
        else:
            out += [f.name, str(v)]
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
