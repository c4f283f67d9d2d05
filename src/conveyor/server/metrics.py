"""Prometheus metrics at `/metrics`, fed by the app's event bus (never by reaching into the worker).

Counters and histograms are updated by a synchronous bus listener (cheap, thread-safe). Queue depths are read
from the store when Prometheus scrapes, so they are right even for jobs enqueued by other processes. Each server
has its own registry, so several apps in one process (tests) do not collide.

Label values are bounded: every series is one more time series for Prometheus to keep, and task names, queue and
namespace names can come from whoever enqueues. A `task` label is a task registered in this process's app, a
`queue` label the default queue or a registered task's queue, a `namespace` label a namespace that exists; anything
else is counted under the one value `other` (job names, ids, user ids and payloads are never labels).

With a metrics token configured (`create_app(metrics_token=...)`, `CONVEYOR_METRICS_TOKEN`, `conveyor serve
--metrics-token`) a scrape needs `Authorization: Bearer <metrics token>` (or the admin token), enforced by
`conveyor.server.access`; the metrics token reaches nothing else.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from conveyor.errors import ConveyorError
from conveyor.events import Event
from conveyor.model import DEFAULT_QUEUE, QueueInfo

if TYPE_CHECKING:
    from conveyor.app import Conveyor

router = APIRouter(tags=["health"])

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
OTHER = "other"
DEPTH_REFRESH_SECONDS = 1.0
OUTCOMES = frozenset({"completed", "failed", "retry", "timeout", "lost", "cancelled"})


class Metrics:
    def __init__(self, app: Conveyor | None = None) -> None:
        self.app = app
        self._queues: frozenset[str] = frozenset({DEFAULT_QUEUE})
        self._queues_for = -1
        self._depths_at = -DEPTH_REFRESH_SECONDS
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("task", "queue")
        self.enqueued = Counter("conveyor_jobs_enqueued", "Jobs enqueued", labels, registry=self.registry)
        self.completed = Counter("conveyor_jobs_completed", "Job runs that completed", labels, registry=self.registry)
        self.failed = Counter(
            "conveyor_jobs_failed", "Job runs that failed for good (dead letter)", labels, registry=self.registry
        )
        self.retried = Counter(
            "conveyor_jobs_retried", "Job runs that failed and will be retried", labels, registry=self.registry
        )
        self.runs = Counter(
            "conveyor_job_runs", "Job runs by outcome", ("task", "queue", "outcome"), registry=self.registry
        )
        self.duration = Histogram(
            "conveyor_job_run_duration_seconds",
            "Time from the start of a run to its end",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "conveyor_job_start_latency_seconds",
            "Time from when a job was due (enqueue or run_at) to the start of its run",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.depth = Gauge(
            "conveyor_queue_jobs",
            "Jobs in each queue by status",
            ("namespace", "queue", "status"),
            registry=self.registry,
        )
        flow_labels = ("namespace", "queue")
        self.processing = Gauge(
            "conveyor_queue_processing", "Jobs processing now in each queue", flow_labels, registry=self.registry
        )
        self.rate_limited = Gauge(
            "conveyor_queue_rate_limited_jobs",
            "Jobs due now in queues whose rate limit is out of tokens (the queue's bucket, or some key's)",
            flow_labels,
            registry=self.registry,
        )
        self.oldest_due = Gauge(
            "conveyor_queue_oldest_due_age_seconds",
            "How long the earliest due pending job of each queue has waited since its run_at (0: none due)",
            flow_labels,
            registry=self.registry,
        )
        self.rate_tokens = Gauge(
            "conveyor_queue_rate_tokens",
            "Claims a rate-limited queue may start now (its own bucket; queues with a rate_key: not reported)",
            flow_labels,
            registry=self.registry,
        )
        self.store_up = Gauge("conveyor_store_up", "1 when the store answered the last scrape", registry=self.registry)

    def task_label(self, task: object) -> str:
        if self.app is None or not isinstance(task, str) or task not in self.app.tasks:
            return OTHER
        return task

    def queue_label(self, queue: object) -> str:
        if self.app is not None and len(self.app.tasks) != self._queues_for:  # tasks registered since: recompute
            self._queues_for = len(self.app.tasks)
            self._queues = frozenset({DEFAULT_QUEUE, *(spec.queue for spec in self.app.tasks.values())})
        return queue if isinstance(queue, str) and queue in self._queues else OTHER

    def on_event(self, event: Event) -> None:
        """Bus listener: must be quick and never raise (the bus swallows errors anyway). Reads the event's typed
        fields; counts this process's events only (another process's, relayed through the store, are counted by
        that process's own metrics, so a sum over a cluster counts each job once)."""
        if event.origin is not None:
            return
        job = event.job
        task = self.task_label(job.task)
        queue = self.queue_label(job.queue)
        if event.type == "push":
            self.enqueued.labels(task, queue).inc()
            return
        attempt = event.attempt
        if event.type != "run" or attempt is None:
            return
        outcome = attempt.outcome.value
        outcome = outcome if outcome in OUTCOMES else OTHER
        self.runs.labels(task, queue, outcome).inc()
        if outcome == "completed":
            self.completed.labels(task, queue).inc()
        elif outcome == "failed":
            self.failed.labels(task, queue).inc()
        elif outcome in ("retry", "timeout", "lost"):
            self.retried.labels(task, queue).inc()
        run_time = event.run_time
        if run_time is not None:
            self.duration.labels(task, queue).observe(run_time)
        wait = event.queue_wait
        if wait is not None:
            self.latency.labels(task, queue).observe(wait)

    async def refresh_depths(self, app: Conveyor) -> None:
        """Read queue depths from the store, at most once a second however often /metrics is called (it may be
        public: a flood of scrapes must not become a flood of store queries)."""
        now = time.monotonic()
        if now - self._depths_at < DEPTH_REFRESH_SECONDS:
            return
        self._depths_at = now
        try:
            queues = await app.alist_queues()
            namespaces = {ns.name for ns in await app.alist_namespaces()}
        except ConveyorError:
            self.store_up.set(0)
            return
        self.store_up.set(1)
        totals: dict[tuple[str, str, str], int] = {}
        for q in queues:
            namespace = q.namespace if q.namespace in namespaces else OTHER
            queue = self.queue_label(q.name)
            for status, count in q.counts.items():
                key = (namespace, queue, str(status))
                totals[key] = totals.get(key, 0) + count
        self.depth.clear()
        for (namespace, queue, status), count in totals.items():
            self.depth.labels(namespace, queue, status).set(count)
        await self._refresh_flow(app, queues, namespaces)

    async def _refresh_flow(self, app: Conveyor, queues: list[QueueInfo], namespaces: set[str]) -> None:
        """Per queue: processing jobs, due jobs held by the rate limit, the oldest due job's wait, rate tokens left
        (`Conveyor.aqueue_flow`, a few store reads per queue, at most once a second)."""
        processing: dict[tuple[str, str], float] = {}
        limited: dict[tuple[str, str], float] = {}
        oldest: dict[tuple[str, str], float] = {}
        tokens: dict[tuple[str, str], float] = {}
        for q in queues:
            key = (q.namespace if q.namespace in namespaces else OTHER, self.queue_label(q.name))
            try:
                flow = await app.aqueue_flow(q.name, q.namespace, top=1)
            except ConveyorError:
                self.store_up.set(0)
                return
            processing[key] = processing.get(key, 0) + flow.processing
            limited[key] = limited.get(key, 0) + (flow.due if flow.rate_limited else 0)
            oldest[key] = max(oldest.get(key, 0.0), flow.oldest_due_age or 0.0)
            if flow.rate is not None:
                tokens[key] = tokens.get(key, 0) + flow.rate.tokens
        for gauge, values in (
            (self.processing, processing),
            (self.rate_limited, limited),
            (self.oldest_due, oldest),
            (self.rate_tokens, tokens),
        ):
            gauge.clear()
            for (namespace, queue), value in values.items():
                gauge.labels(namespace, queue).set(value)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    ctx = request.app.state.conveyor
    m: Metrics = request.app.state.metrics
    await m.refresh_depths(ctx.app)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
