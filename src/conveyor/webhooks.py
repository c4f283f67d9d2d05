"""Webhooks: per-namespace HTTP notifications of `push` and `run` events, delivered through the queue itself.

A core service, not an HTTP-server feature: every worker starts the dispatcher (`Worker.run`), however it was
started (`app.run_worker()`, `arun_worker`, `conveyor worker`, `conveyor serve`), because `run` events are
published where jobs run; `conveyor serve` shares that one dispatcher for its API's `push` events. One dispatcher
runs per app however many workers and servers use it (`acquire_dispatcher` / `release_dispatcher`).

**Trust.** The dispatcher turns an event into a `conveyor:webhook` job for a namespace whose settings ask for it.
The job carries nothing the delivery trusts: the dispatcher first writes a *delivery record* (target namespace,
event type, body) to the store's key-value space under the job's own id — which the store, not the caller,
assigns — and the delivery reads that record, then the namespace's current settings (URL, secret). A
`conveyor:webhook` job made any other way (a forged payload) finds no record and fails without sending anything.
The job's payload repeats the event for people reading the job; it is never used to deliver.

**Targets.** A webhook URL must be http(s) and reach a public address: private, loopback, link-local, shared
(CGNAT), multicast, reserved and unspecified addresses — IPv4-mapped, 6to4, Teredo and NAT64 forms included — are
refused when the settings are written (for hosts that resolve then) and again at every delivery, after DNS
resolution: the connection goes to the address that was checked (pinned; TLS still verifies the host name), and
redirects are not followed. A namespace opts out with `webhook_allow_private` (a receiver on the same network).

**Errors** that users can read (the attempt's error text, a Run answer) name the namespace and the status code,
never the URL, its query string or the secret.

**Signature.** `X-Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the namespace's
`webhook_secret`, read at delivery time and never stored in the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from urllib.parse import urlsplit

from conveyor.context import JobContext
from conveyor.enqueue import enqueue_system
from conveyor.errors import ConveyorError, Fail, ValidationError
from conveyor.events import Event, Subscription
from conveyor.ids import new_job_id
from conveyor.model import DEFAULT_NAMESPACE, JSON, RESERVED_TASK_PREFIX, Namespace
from conveyor.runtime import Runtime, SupportsRuntime

log = logging.getLogger("conveyor.webhooks")

WEBHOOK_TASK = "conveyor:webhook"
SYSTEM_TASK_PREFIX = RESERVED_TASK_PREFIX
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_MAX_ATTEMPTS = 10
RECORD_TTL = timedelta(days=7)
"""How long a delivery record is kept: ten tries with backoff capped at one hour fit many times over, and a
dead-lettered webhook can be requeued within it. A delivered record is removed at once."""
_RECORD_PREFIX = "webhook:"

# ---- signatures ------------------------------------------------------------------------------------------------


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook(secret: str, header: str, body: bytes, *, tolerance: float = 300.0) -> bool:
    """Check a received webhook (for receivers written in Python, and the tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), header)


# ---- targets ---------------------------------------------------------------------------------------------------

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_problem(address: str) -> str | None:
    """Why a webhook may not be sent to this IP address (a phrase), or None when it is a public one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return "an address that is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(str(embedded))
            return None if inner is None else f"{inner} (inside the IPv6 address {ip})"
    if ip.is_loopback:
        return f"a loopback address ({ip})"
    if ip.is_link_local:
        return f"a link-local address ({ip}; cloud metadata services live there)"
    if ip.is_unspecified:
        return f"the unspecified address ({ip}, which reaches this machine)"
    if ip.is_multicast:
        return f"a multicast address ({ip})"
    if ip.is_private or not ip.is_global:
        return f"a private or reserved address ({ip})"
    return None


def _split_target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL, or ValidationError (the message never repeats the URL)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("webhook_url is not a valid URL", field="webhook_url") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError("webhook_url must be an http:// or https:// URL", field="webhook_url")
    host = parts.hostname
    if not host:
        raise ValidationError("webhook_url has no host", field="webhook_url")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


async def _resolve(host: str, port: int) -> list[str]:
    """The host's addresses (an IP literal is its own). Empty when it does not resolve."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


async def check_webhook_url(url: str, *, allow_private: bool = False) -> None:
    """Settings-time check: an http(s) URL whose host is not a private, loopback or link-local address. A host name
    that resolves is checked address by address; one that does not resolve yet is accepted here (a delivery
    resolves and checks again before it connects)."""
    _, host, port = _split_target(url)
    if allow_private:
        return
    for address in await _resolve(host, port):
        problem = address_problem(address)
        if problem is not None:
            raise ValidationError(
                f"webhook_url points to {problem}; webhooks go to public addresses only, unless the namespace "
                "sets webhook_allow_private",
                field="webhook_url",
            )


# ---- delivery --------------------------------------------------------------------------------------------------


def _record_key(job_id: str) -> str:
    return _RECORD_PREFIX + job_id


async def _namespace_of(rt: Runtime, name: str) -> Namespace | None:
    return await rt.on_home(lambda: rt.store.get_namespace(name))


async def deliver_webhook(app: SupportsRuntime, job_id: str) -> dict[str, JSON]:
    """Deliver the notification recorded for webhook job `job_id`. 2xx → done; 408/429/5xx or a network error →
    raise (retried with backoff); a redirect or any other 4xx → Fail (retrying will not help)."""
    rt = app.runtime
    store = rt.store
    raw = await rt.on_home(lambda: store.kv_get(_record_key(job_id)))
    if raw is None:
        raise Fail(
            "this webhook job has no delivery record: it was not created by Conveyor's dispatcher, or it is older "
            f"than {RECORD_TTL.days} days. Nothing was sent.",
            status_code=410,
        )
    record = json.loads(raw)
    namespace = str(record["namespace"])
    ns = await _namespace_of(rt, namespace)
    if ns is None:
        raise Fail(f"namespace {namespace!r} no longer exists; nothing was sent", status_code=404)
    if not ns.webhook_url:
        raise Fail(f"namespace {namespace!r} has no webhook_url any more; nothing was sent", status_code=400)
    body = json.dumps(record["event"], separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "conveyor-webhook/1",
        "X-Conveyor-Event": str(record.get("type", "")),
    }
    if ns.webhook_secret:
        headers["X-Conveyor-Signature"] = sign_webhook(ns.webhook_secret, int(time.time()), body)
    code = await _post(ns, body, headers)
    if 200 <= code < 300:
        with contextlib.suppress(ConveyorError):  # delivered: the record's work is done (else it expires)
            await rt.on_home(lambda: store.kv_delete(_record_key(job_id)))
        return {"status_code": code}
    if 300 <= code < 400:
        raise Fail(
            f"the webhook of namespace {namespace!r} answered {code} (a redirect); Conveyor does not follow "
            "redirects: set webhook_url to the final address",
            status_code=400,
        )
    if code in (408, 429) or code >= 500:
        raise RuntimeError(f"the webhook of namespace {namespace!r} answered {code}")
    raise Fail(f"the webhook of namespace {namespace!r} answered {code}", status_code=code)


async def _post(ns: Namespace, body: bytes, headers: dict[str, str]) -> int:
    """POST to the namespace's URL through an address checked after resolution (pinned), no redirects, no proxy
    from the environment. Errors say what happened without the URL."""
    assert ns.webhook_url is not None
    try:
        scheme, host, port = _split_target(ns.webhook_url)
    except ValidationError as exc:
        raise Fail(f"namespace {ns.name!r}: {exc.message}", status_code=400) from None
    addresses = await _resolve(host, port)
    if not addresses:
        raise RuntimeError(f"the webhook host of namespace {ns.name!r} does not resolve")
    if not ns.webhook_allow_private:
        allowed = [a for a in addresses if address_problem(a) is None]
        if not allowed:
            problem = address_problem(addresses[0])
            raise Fail(
                f"the webhook of namespace {ns.name!r} resolves to {problem}; webhooks go to public addresses "
                "only, unless the namespace sets webhook_allow_private. Nothing was sent.",
                status_code=403,
            )
        addresses = allowed
    # Imported at the first delivery, not with the module: every worker (and so `import conveyor`) loads this
    # module, and an HTTP client with its CLI dependencies would double the start-up time of every command.
    import httpx

    url = httpx.URL(ns.webhook_url)
    pinned = url.copy_with(host=addresses[0])
    default_port = 443 if scheme == "https" else 80
    headers = {**headers, "Host": host if port == default_port else f"{host}:{port}"}
    if ":" in host:  # an IPv6 literal keeps its brackets in Host
        headers["Host"] = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = await client.post(pinned, content=body, headers=headers, extensions=extensions)
    except httpx.TimeoutException:
        raise RuntimeError(f"the webhook of namespace {ns.name!r} did not answer in {WEBHOOK_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise RuntimeError(f"the webhook of namespace {ns.name!r} is unreachable ({type(exc).__name__})") from None
    return response.status_code


def register_webhook_task(app: SupportsRuntime) -> None:
    """Register `conveyor:webhook` on an app: every worker does, so webhook jobs run wherever workers run."""
    rt = app.runtime
    if WEBHOOK_TASK in rt.tasks:
        return

    async def webhook(payload: JSON, ctx: JobContext) -> dict[str, JSON]:
        return await deliver_webhook(rt, ctx.job.id)

    rt.register(WEBHOOK_TASK, webhook, max_attempts=WEBHOOK_MAX_ATTEMPTS, timeout=WEBHOOK_TIMEOUT * 2, system=True)


# ---- the dispatcher --------------------------------------------------------------------------------------------


def is_system_event(event: Event) -> bool:
    return event.job.task.startswith(SYSTEM_TASK_PREFIX)


def webhook_body(event: Event) -> dict[str, JSON]:
    """The one place an event becomes a webhook's JSON body: its type, GS2's key names, and `at` in RFC 3339 with
    milliseconds (`startedAt`/`runAt` of a run in Python's ISO format, as the SSE stream has them)."""
    job = event.job
    body: dict[str, JSON] = {
        "type": event.type,
        "namespaceName": job.namespace,
        "userId": job.user_id,
        "jobName": job.id,
        "task": job.task,
    }
    attempt = event.attempt
    if event.type == "run" and attempt is not None:
        body["statusCode"] = attempt.status_code
        body["outcome"] = attempt.outcome.value
        body["queue"] = job.queue
        body["tryNumber"] = job.try_number
        body["startedAt"] = job.started_at.isoformat() if job.started_at else None
        body["runAt"] = job.run_at.isoformat()
    else:
        body["queue"] = job.queue
    at = event.at.astimezone(UTC)
    body["at"] = f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"
    return body


class WebhookDispatcher:
    """Turns bus events into `conveyor:webhook` jobs for namespaces that asked for them (see module doc)."""

    def __init__(self, app: SupportsRuntime, *, cache_seconds: float = 2.0) -> None:
        self.runtime = app.runtime
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Namespace | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._refreshing: set[str] = set()

    def start(self) -> None:
        sub = self.runtime.events.subscribe(self._wants, maxsize=100_000)
        self._task = asyncio.create_task(self._run(sub), name="conveyor-webhooks")

    def _wants(self, event: Event) -> bool:
        """Runs in the publisher's thread for every event (the worker's per-job hot path): an event of a namespace
        known, within the cache's life, to have no webhook is dropped here, without a hop to the dispatcher's
        loop. Unknown or stale namespaces pass, and the dispatcher refreshes them."""
        if event.origin is not None or event.type not in ("push", "run") or is_system_event(event):
            return False  # a remote event is the publishing process's to deliver
        cached = self._cache.get(event.namespace)
        if cached is None:
            return True
        ns = cached[1]
        if time.monotonic() - cached[0] >= self.cache_seconds and event.namespace not in self._refreshing:
            # Stale: this event goes to the dispatcher's loop, which re-reads the namespace; the events meanwhile
            # keep the last answer. So a worker with no webhook configured makes one cross-thread call per
            # namespace every cache_seconds, not one per job.
            self._refreshing.add(event.namespace)
            return True
        return ns is not None and bool(ns.webhook_url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _namespace(self, name: str) -> Namespace | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            ns = await _namespace_of(self.runtime, name)
        finally:
            self._refreshing.discard(name)
        self._cache[name] = (now, ns)
        return ns

    async def _run(self, sub: Subscription) -> None:
        try:
            while True:
                event = await sub.get()
                try:
                    await self.handle(event)
                except ConveyorError as exc:  # store down: the notification is lost, the process lives on
                    log.warning("webhook for %s event of job %s not queued: %s", event.type, event.job_id, exc)
                except Exception:
                    log.exception("webhook dispatcher failed on %s event", event.type)
        finally:
            sub.close()

    async def handle(self, event: Event) -> None:
        ns = await self._namespace(event.namespace)
        if ns is None or not ns.webhook_url:
            return
        if (event.type == "push" and not ns.push_notification) or (event.type == "run" and not ns.run_notification):
            return
        body = webhook_body(event)
        record = {"namespace": event.namespace, "type": event.type, "event": body}
        job_id = new_job_id()
        rt = self.runtime
        store = rt.store
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        await rt.on_home(lambda: store.kv_set(_record_key(job_id), text, ttl=RECORD_TTL.total_seconds()))
        # The payload repeats the event for readers of the job; the delivery reads only the record above.
        await enqueue_system(rt, WEBHOOK_TASK, record, {"namespace": DEFAULT_NAMESPACE, "job_id": job_id})


_dispatchers: weakref.WeakKeyDictionary[Runtime, tuple[WebhookDispatcher, int]] = weakref.WeakKeyDictionary()


def acquire_dispatcher(app: SupportsRuntime) -> WebhookDispatcher:
    """Start the app's dispatcher, or count one more user of the running one (call on the app's loop)."""
    rt = app.runtime
    register_webhook_task(rt)
    current = _dispatchers.get(rt)
    if current is not None:
        _dispatchers[rt] = (current[0], current[1] + 1)
        return current[0]
    dispatcher = WebhookDispatcher(rt)
    dispatcher.start()
    _dispatchers[rt] = (dispatcher, 1)
    return dispatcher


async def release_dispatcher(app: SupportsRuntime) -> None:
    """One user less; the last one stops the dispatcher."""
    rt = app.runtime
    current = _dispatchers.get(rt)
    if current is None:
        return
    dispatcher, users = current
    if users > 1:
        _dispatchers[rt] = (dispatcher, users - 1)
        return
    del _dispatchers[rt]
    await dispatcher.stop()


@contextlib.asynccontextmanager
async def webhook_notifications(app: SupportsRuntime) -> AsyncIterator[None]:
    """Dispatch webhooks while the block runs (workers do this by themselves; for processes that only enqueue,
    so their `push` events are delivered too).

    >>> async with webhook_notifications(app):
    ...     await serve_requests()
    """
    acquire_dispatcher(app)
    try:
        yield
    finally:
        await release_dispatcher(app)
