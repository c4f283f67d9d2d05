"""The GS2-JobQueue-compatible REST surface, so the official `gs2` Python SDK talks to Conveyor unchanged.

Two routers:

* `build_router(conveyor_app, auth)` — GS2's job-queue service at `/job-queue/...` (namespaces, per-user jobs,
  Run, job results, dead letters, `/system/version`);
* `build_identifier_router(auth)` — GS2's identifier login, `POST /identifier/projectToken/login`, which
  `BasicGs2Credential` calls on `connect()`. It lives at the app root, not under `/job-queue`.

Mount both with `app.include_router(router)`: each router carries its own prefix. The SDK's contract, which every
route here follows (`/work/shared/reference/seed-systems.md` §1.3–1.5):

* every POST/PUT body is gzip-compressed by default (`Content-Encoding: gzip`): `gs2_common` inflates it;
* success is HTTP 200 with a JSON body — anything else is an error to the SDK;
* errors are `{"message": "<JSON string of [{component, message, code}]>"}` with the status that selects the
  SDK's exception class (400/401/404/409/503). `GS2Route` turns every exception, FastAPI's own validation
  errors included, into that shape, because a router cannot install app-level exception handlers.

Auth: the SDK sends `Authorization: Bearer {projectToken}`. The admin token is the project token and reaches
everything; a user token reaches that user's jobs only (never push: that is a server-side call).
`X-GS2-ACCESS-TOKEN` carries a user token and names the user of `/user/me/...`. Who may call which operation is
decided by `conveyor.server.access` (its matrix and guard, installed on the whole application); endpoints here
read the user it resolved (`path_user`). The login routers check the credentials they are given with the
`GS2Auth` protocol below (the server's `conveyor.server.auth.ServerAuth` satisfies it).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request

from conveyor.app import Conveyor
from conveyor.errors import (
    NamespaceExists,
    NotFound,
    ValidationError,
)
from conveyor.idempotency import Answer, InProgress, once
from conveyor.model import (
    JSON,
    Attempt,
    Job,
    JobFilter,
    JobKey,
    JobSort,
    JobStatus,
    Namespace,
    RawJSON,
    decode_cursor,
    decode_name_cursor,
    encode_cursor,
    encode_name_cursor,
    validate_name,
)
from conveyor.server.access import path_user
from conveyor.server.common import visible_attempt
from conveyor.server.gs2_common import (
    DEFAULT_OWNER_ID,
    DEFAULT_REGION,
    DUPLICATION_HEADER,
    DUPLICATION_TTL,
    GS2_RESPONSES,
    IDENTIFIER_PREFIX,
    JOB_QUEUE_PREFIX,
    GS2Auth,
    GS2Principal,
    GS2Route,
    json_body,
    maybe_await,
    openapi_body,
    principal_for,
    unauthorized,
    unsupported_route,
)
from conveyor.server.gs2_models import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    Grn,
    GS2Error,
    check_user_id,
    dead_letter_to_gs2,
    job_result_to_gs2,
    job_to_gs2,
    namespace_from_gs2,
    namespace_to_gs2,
    parse_job_entries,
    result_body_to_gs2,
)
from conveyor.server.gs2_stamp import delete_by_task, push_by_sheet
from conveyor.server.gs2_userdata import add_user_data_routes
from conveyor.version import __version__


def _paging(request: Request) -> tuple[str | None, int]:
    """GS2 pages with an opaque `pageToken` (here: a keyset cursor, see `_job_token`) and `limit` (default 30)."""
    token = request.query_params.get("pageToken") or None
    raw_limit = request.query_params.get("limit")
    try:
        limit = int(raw_limit) if raw_limit else DEFAULT_PAGE_LIMIT
    except ValueError:
        raise GS2Error(400, "limit", "limit must be an integer", "jobQueue.limit.error.invalid") from None
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise GS2Error(
            400, "limit", f"limit must be from 1 to {MAX_PAGE_LIMIT}, got {limit}", "jobQueue.limit.error.invalid"
        )
    return token, limit


def _bad_token() -> GS2Error:
    return GS2Error(
        400,
        "pageToken",
        "pageToken is invalid: pass the previous answer's nextPageToken unchanged, or none for the first page",
        "jobQueue.pageToken.error.invalid",
    )


def _job_key(token: str | None, sort: JobSort) -> JobKey | None:
    """A job list's pageToken: a keyset cursor of that list's order (never an offset, which skips a job when one
    before it is consumed between pages)."""
    if token is None:
        return None
    try:
        return decode_cursor(token, sort, field="pageToken")
    except ValidationError:
        raise _bad_token() from None


def _job_token(key: JobKey | None) -> str | None:
    return None if key is None else encode_cursor(key)


_NOTIFICATION_SETTING: dict[str, Any] = {
    "type": "object",
    "properties": {
        "gatewayNamespaceId": {"type": "string"},
        "enableTransferMobileNotification": {"type": "boolean"},
        "sound": {"type": "string"},
        "enable": {"type": "string", "enum": ["Enabled", "Disabled"]},
    },
}
_NAMESPACE_BODY: dict[str, Any] = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9\\-_.]{1,128}$"},
    "description": {"type": "string", "maxLength": 1024},
    "enableAutoRun": {"type": "boolean"},
    "pushNotification": _NOTIFICATION_SETTING,
    "runNotification": _NOTIFICATION_SETTING,
    "transactionSetting": {"type": "object"},
    "transactionSettingV2": {"type": "object"},
    "logSetting": {"type": "object", "properties": {"loggingNamespaceId": {"type": "string"}}},
    "contextStack": {"type": ["string", "null"]},
}
_PUSH_BODY: dict[str, Any] = {
    "jobs": {
        "type": "array",
        "minItems": 1,
        "maxItems": 10,
        "items": {
            "type": "object",
            "required": ["scriptId"],
            "properties": {
                "scriptId": {"type": "string", "minLength": 1, "maxLength": 1024},
                "args": {"type": "string", "maxLength": 131072, "description": 'JSON text; default "{}"'},
                "maxTryCount": {"type": "integer", "minimum": 0, "maximum": 100},
            },
        },
    },
    "contextStack": {"type": ["string", "null"]},
}
_LOGIN_BODY: dict[str, Any] = {"client_id": {"type": "string"}, "client_secret": {"type": "string"}}
_STAMP_SHEET_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["stampSheet", "keyId"],
                    "properties": {"stampSheet": {"type": "string"}, "keyId": {"type": "string"}},
                }
            }
        },
    }
}
_STAMP_TASK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["stampTask", "keyId"],
                    "properties": {"stampTask": {"type": "string"}, "keyId": {"type": "string"}},
                }
            }
        },
    }
}


# ---- the job-queue router ----------------------------------------------------------------------------------------


def build_router(
    conveyor_app: Conveyor,
    auth: GS2Auth,
    *,
    region: str = DEFAULT_REGION,
    owner_id: str = DEFAULT_OWNER_ID,
    prefix: str = JOB_QUEUE_PREFIX,
    grn: Grn | None = None,
) -> APIRouter:
    """The GS2 JobQueue API for `conveyor_app`, under `prefix` (`/job-queue`, where the SDK's
    `steady_endpoint` sends `job-queue` calls). `grn` (else `region`/`owner_id`) names this deployment in GRNs."""
    router = APIRouter(prefix=prefix, route_class=GS2Route, tags=["gs2"], responses=GS2_RESPONSES)
    grn = grn or Grn(region, owner_id)
    api = _GS2Api(conveyor_app, auth, grn)

    # Order matters: literal segments (`system`, `me`, `run`) before the `{param}` routes they would match.
    router.add_api_route("/system/version", api.get_service_version, methods=["GET"])
    router.add_api_route("/", api.describe_namespaces, methods=["GET"])
    router.add_api_route(
        "/", api.create_namespace, methods=["POST"], openapi_extra=openapi_body(_NAMESPACE_BODY, "name")
    )
    router.add_api_route("/{namespaceName}/status", api.get_namespace_status, methods=["GET"])
    router.add_api_route("/{namespaceName}", api.get_namespace, methods=["GET"])
    router.add_api_route(
        "/{namespaceName}", api.update_namespace, methods=["PUT"], openapi_extra=openapi_body(_NAMESPACE_BODY)
    )
    router.add_api_route("/{namespaceName}", api.delete_namespace, methods=["DELETE"])

    router.add_api_route("/{namespaceName}/user/me/job/run", api.run, methods=["POST"])
    router.add_api_route("/{namespaceName}/user/me/job/{jobName}/result", api.get_job_result, methods=["GET"])
    router.add_api_route("/{namespaceName}/user/me/job/{jobName}", api.delete_job, methods=["DELETE"])

    router.add_api_route("/{namespaceName}/user/{userId}/job/run", api.run_by_user_id, methods=["POST"])
    router.add_api_route("/{namespaceName}/user/{userId}/job", api.describe_jobs_by_user_id, methods=["GET"])
    router.add_api_route(
        "/{namespaceName}/user/{userId}/job",
        api.push_by_user_id,
        methods=["POST"],
        openapi_extra=openapi_body(_PUSH_BODY),
    )
    router.add_api_route(
        "/{namespaceName}/user/{userId}/job/{jobName}/result", api.get_job_result_by_user_id, methods=["GET"]
    )
    router.add_api_route("/{namespaceName}/user/{userId}/job/{jobName}", api.get_job_by_user_id, methods=["GET"])
    router.add_api_route("/{namespaceName}/user/{userId}/job/{jobName}", api.delete_job_by_user_id, methods=["DELETE"])

    router.add_api_route(
        "/{namespaceName}/user/{userId}/dead", api.describe_dead_letter_jobs_by_user_id, methods=["GET"]
    )
    router.add_api_route(
        "/{namespaceName}/user/{userId}/dead/{deadLetterJobName}",
        api.get_dead_letter_job_by_user_id,
        methods=["GET"],
    )
    router.add_api_route(
        "/{namespaceName}/user/{userId}/dead/{deadLetterJobName}",
        api.delete_dead_letter_job_by_user_id,
        methods=["DELETE"],
    )

    router.add_api_route("/stamp/job", api.push_by_stamp_sheet, methods=["POST"], openapi_extra=_STAMP_SHEET_BODY)
    router.add_api_route(
        "/stamp/job/delete", api.delete_by_stamp_task, methods=["POST"], openapi_extra=_STAMP_TASK_BODY
    )
    add_user_data_routes(router, conveyor_app, auth, grn, service="job-queue")
    router.add_api_route(
        "/{rest:path}",
        unsupported_route(prefix, "jobQueue"),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    return router


class _GS2Api:
    """The endpoints. Methods are FastAPI endpoints taking the raw `Request` (so bodies and query strings are
    validated here, with GS2's error texts, rather than by FastAPI's 422)."""

    def __init__(self, app: Conveyor, auth: GS2Auth, grn: Grn) -> None:
        self.app = app
        self.auth = auth
        self.grn = grn

    # ---- helpers -----------------------------------------------------------------------------------------------

    async def _namespace(self, name: str) -> Namespace:
        try:
            validate_name(name, "namespaceName")
        except ValidationError:
            raise _ns_not_found(name) from None
        try:
            return await self.app.aget_namespace(name)
        except NotFound:
            raise _ns_not_found(name) from None

    async def _user_job(self, namespace: str, user_id: str, name: str) -> Job:
        job = await self._find_job(name)
        if job is None or job.namespace != namespace or job.user_id != user_id:
            raise GS2Error(404, "job", f"job not found: {name}", "jobQueue.job.error.notFound")
        return job

    async def _find_job(self, name: str) -> Job | None:
        try:
            uuid.UUID(name)
        except ValueError:
            return None
        return await self.app.aget_job(name)

    async def _deduplicated(
        self, request: Request, scope: str, compute: Callable[[], Awaitable[dict[str, JSON]]]
    ) -> dict[str, JSON]:
        """Honour `X-GS2-DUPLICATION-AVOIDER` with Conveyor's one idempotency protocol (`conveyor.idempotency`):
        the first successful answer is stored (24 h) and replayed to every retry of the same call; a retry that
        arrives while the first is still running gets 409. GS2 compares no bodies: the avoider alone names the
        call, as the SDK uses it."""
        avoider = request.headers.get(DUPLICATION_HEADER)
        if not avoider:
            return await compute()

        async def run() -> Answer:
            return Answer(200, await compute())

        try:
            answer = await once(self.app, f"gs2:{request.method} {scope}", avoider, run, ttl=DUPLICATION_TTL)
        except InProgress:
            raise GS2Error(
                409,
                "duplicationAvoider",
                "a request with this X-GS2-DUPLICATION-AVOIDER is still being processed; retry",
                "jobQueue.duplicationAvoider.error.inProgress",
            ) from None
        body: dict[str, JSON] = answer.body
        return body

    async def _active_jobs(
        self, namespace: str, user_id: str, token: str | None, limit: int
    ) -> tuple[list[Job], str | None]:
        """The user's queue in execution order: running jobs first, then pending ones oldest first, each part by
        (created, id). The token says which part the next page continues and where (`r`/`p` + a keyset cursor),
        so a job run or pushed between pages never makes a page skip or repeat one."""
        part, key = "r", None
        if token is not None:
            if token[:1] not in ("r", "p") or (token == "r"):
                raise _bad_token()
            part, key = token[0], _job_key(token[1:] or None, JobSort.CREATED)
        items: list[Job] = []
        if part == "r":
            running = await self.app.alist_jobs(
                JobFilter(namespace=namespace, user_id=user_id, status=JobStatus.PROCESSING),
                limit=limit,
                after=key,
                sort=JobSort.CREATED,
            )
            items = list(running.items)
            if running.next is not None:
                return items, "r" + encode_cursor(running.next)
            key = None
        pending = JobFilter(namespace=namespace, user_id=user_id, status=JobStatus.PENDING)
        want = limit - len(items)
        if want == 0:  # the page is full of running jobs: is there a pending part to come?
            probe = await self.app.alist_jobs(pending, limit=1, sort=JobSort.CREATED)
            return items, "p" if probe.items else None
        page = await self.app.alist_jobs(pending, limit=want, after=key, sort=JobSort.CREATED)
        items += page.items
        return items, None if page.next is None else "p" + encode_cursor(page.next)

    async def _latest_attempt(self, job: Job, raw_try: str | None) -> Attempt:
        attempts = await self.app.aattempts(job.id)
        if raw_try:
            try:
                number = int(raw_try)
            except ValueError:
                raise GS2Error(400, "tryNumber", "tryNumber must be an integer", "jobQueue.tryNumber.error") from None
            # Records come in attempt_order: of two runs with one try number (a claim lost in a crash of the store
            # and the one that replaced it) the last is the one that counted.
            for attempt in reversed(attempts):
                if attempt.try_number == number:
                    return attempt
            raise GS2Error(
                404, "jobResult", f"no result for try {number} of job {job.id}", "jobQueue.jobResult.error.notFound"
            )
        if not attempts:
            raise GS2Error(
                404, "jobResult", f"job {job.id} has not been executed yet", "jobQueue.jobResult.error.notFound"
            )
        return attempts[-1]

    # ---- system ------------------------------------------------------------------------------------------------

    async def get_service_version(self, request: Request) -> dict[str, JSON]:
        """GS2 GetServiceVersion: Conveyor's version."""
        return {"item": __version__}

    # ---- namespaces --------------------------------------------------------------------------------------------

    async def describe_namespaces(self, request: Request) -> dict[str, JSON]:
        """GS2 DescribeNamespaces: by name, optionally filtered by `namePrefix`, paged."""
        token, limit = _paging(request)
        prefix = request.query_params.get("namePrefix") or ""
        start = None
        if token is not None:
            try:
                start = decode_name_cursor(token, field="pageToken")
            except ValidationError:
                raise _bad_token() from None
        names = [
            ns
            for ns in await self.app.alist_namespaces()
            if ns.name.startswith(prefix) and (start is None or ns.name > start)
        ]
        page = names[:limit]
        return {
            "items": [namespace_to_gs2(ns, self.grn) for ns in page],
            "nextPageToken": encode_name_cursor(page[-1].name) if len(names) > limit else None,
        }

    async def create_namespace(self, request: Request) -> dict[str, JSON]:
        """GS2 CreateNamespace. `enableAutoRun` defaults to false, as in GS2."""
        body = await json_body(request)
        name = body.get("name")
        try:
            validate_name(name, "name")
        except ValidationError as exc:
            raise GS2Error(400, "name", exc.message, "jobQueue.name.error.invalid") from None
        assert isinstance(name, str)
        try:
            stored = await self.app.acreate_namespace(namespace_from_gs2(body, None, name))
        except NamespaceExists:
            raise GS2Error(
                409, "name", f"namespace already exists: {name}", "jobQueue.namespace.error.duplicate"
            ) from None
        return {"item": namespace_to_gs2(stored, self.grn)}

    async def get_namespace_status(self, request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        await self._namespace(namespaceName)
        return {"status": "ACTIVE"}

    async def get_namespace(self, request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        return {"item": namespace_to_gs2(await self._namespace(namespaceName), self.grn)}

    async def update_namespace(self, request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        """GS2 UpdateNamespace. Fields left out keep their value (the SDK only sends the ones that are set)."""
        body = await json_body(request)
        await self._namespace(namespaceName)  # GS2's own not-found answer
        try:
            stored = await self.app.aupdate_namespace(
                namespaceName, lambda current: namespace_from_gs2(body, current, namespaceName)
            )
        except NotFound:  # deleted meanwhile
            raise _ns_not_found(namespaceName) from None
        return {"item": namespace_to_gs2(stored, self.grn)}

    async def delete_namespace(self, request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        """GS2 DeleteNamespace: the namespace goes with every job of it and their results, in one step (GS2's rule);
        none of its jobs can run afterwards."""
        existing = await self._namespace(namespaceName)
        await self.app.adelete_namespace(namespaceName)
        return {"item": namespace_to_gs2(existing, self.grn)}

    # ---- jobs --------------------------------------------------------------------------------------------------

    async def describe_jobs_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        """The user's queue: jobs still to run (processing, then pending oldest first). Executed jobs leave the
        queue as in GS2; their results stay readable, failed ones as dead letters."""
        check_user_id(userId)
        token, limit = _paging(request)
        await self._namespace(namespaceName)
        items, next_token = await self._active_jobs(namespaceName, userId, token, limit)
        return {"items": [job_to_gs2(j, self.grn) for j in items], "nextPageToken": next_token}

    async def get_job_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
        jobName: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)
        return {"item": job_to_gs2(await self._user_job(namespaceName, userId, jobName), self.grn)}

    async def push_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        """GS2 PushByUserId: 1–10 entries, all or nothing. `autoRun` tells whether background workers will
        execute them (the namespace's auto_run); otherwise the user's Run does."""
        check_user_id(userId)
        body = await json_body(request)
        entries = parse_job_entries(body)
        ns = await self._namespace(namespaceName)

        async def push() -> dict[str, JSON]:
            jobs = await self.app.aenqueue_many(
                [
                    {
                        "task": e.script_id,
                        "payload": RawJSON(e.args),
                        "namespace": namespaceName,
                        "user_id": userId,
                        "max_attempts": e.max_try_count,
                    }
                    for e in entries
                ]
            )
            return {"items": [job_to_gs2(j, self.grn) for j in jobs], "autoRun": ns.auto_run}

        return await self._deduplicated(request, f"push {namespaceName} {userId}", push)

    async def run(self, request: Request, namespaceName: str) -> dict[str, JSON]:  # noqa: N803
        user_id = path_user(request)
        return await self._run(request, namespaceName, user_id)

    async def run_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)
        return await self._run(request, namespaceName, userId)

    async def _run(self, request: Request, namespace: str, user_id: str) -> dict[str, JSON]:
        """GS2 Run: execute the user's next job in this request (`Conveyor.arun_next`) and answer
        `{item, result, isLastJob}`; an empty queue answers nulls and `isLastJob: true`; a run while another of
        the user's jobs is processing answers 409 "Job queue execution conflict. Retry required."."""
        await self._namespace(namespace)

        async def execute() -> dict[str, JSON]:
            outcome = await self.app.arun_next(namespace, user_id)
            return {
                "item": None if outcome.job is None else job_to_gs2(outcome.job, self.grn),
                "result": None
                if outcome.attempt is None or outcome.job is None
                else result_body_to_gs2(_shown(request, outcome.attempt, outcome.job.task)),
                "isLastJob": outcome.is_last,
            }

        return await self._deduplicated(request, f"run {namespace} {user_id}", execute)

    async def delete_job(self, request: Request, namespaceName: str, jobName: str) -> dict[str, JSON]:  # noqa: N803
        user_id = path_user(request)
        return await self._delete_job(request, namespaceName, user_id, jobName)

    async def delete_job_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
        jobName: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)
        return await self._delete_job(request, namespaceName, userId, jobName)

    async def _delete_job(self, request: Request, namespace: str, user_id: str, name: str) -> dict[str, JSON]:
        """GS2 DeleteJob: removed regardless of its state (Conveyor's `delete(force=True)`), attempts included."""

        async def delete() -> dict[str, JSON]:
            await self._user_job(namespace, user_id, name)
            try:
                job = await self.app.adelete(name, force=True)
            except NotFound:
                raise GS2Error(404, "job", f"job not found: {name}", "jobQueue.job.error.notFound") from None
            return {"item": job_to_gs2(job, self.grn)}

        return await self._deduplicated(request, f"delete {namespace} {user_id} {name}", delete)

    # ---- transaction actions (gs2_stamp) -------------------------------------------------------------------------

    async def push_by_stamp_sheet(self, request: Request) -> dict[str, JSON]:
        """GS2 PushByStampSheet: the signed sheet is the authority (no admin token needed); exactly once."""
        body = await json_body(request)
        return await push_by_sheet(self.app, self.grn, body.get("stampSheet"), body.get("keyId"))

    async def delete_by_stamp_task(self, request: Request) -> dict[str, JSON]:
        """GS2 DeleteByStampTask: the signed task is the authority; exactly once."""
        body = await json_body(request)
        return await delete_by_task(
            self.app, self.grn, body.get("stampTask"), body.get("keyId"), body.get("contextStack")
        )

    # ---- results -----------------------------------------------------------------------------------------------

    async def get_job_result(self, request: Request, namespaceName: str, jobName: str) -> dict[str, JSON]:  # noqa: N803
        user_id = path_user(request)
        return await self._job_result(request, namespaceName, user_id, jobName)

    async def get_job_result_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
        jobName: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)
        return await self._job_result(request, namespaceName, userId, jobName)

    async def _job_result(self, request: Request, namespace: str, user_id: str, name: str) -> dict[str, JSON]:
        """GS2 GetJobResult: the try given by `tryNumber`, else the latest."""
        job = await self._user_job(namespace, user_id, name)
        attempt = await self._latest_attempt(job, request.query_params.get("tryNumber"))
        return {"item": job_result_to_gs2(job, _shown(request, attempt, job.task), self.grn)}

    # ---- dead letters ------------------------------------------------------------------------------------------

    async def describe_dead_letter_jobs_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
    ) -> dict[str, JSON]:
        """GS2 DescribeDeadLetterJobsByUserId: the user's failed jobs (newest first), each with every try."""
        check_user_id(userId)
        token, limit = _paging(request)
        after = _job_key(token, JobSort.CREATED_DESC)
        await self._namespace(namespaceName)
        page = await self.app.alist_jobs(
            JobFilter(namespace=namespaceName, user_id=userId, status=JobStatus.FAILED), limit=limit, after=after
        )
        items = [dead_letter_to_gs2(j, await self._attempts_shown(request, j), self.grn) for j in page.items]
        return {"items": items, "nextPageToken": _job_token(page.next)}

    async def _dead_letter(self, namespace: str, user_id: str, name: str) -> Job:
        job = await self._find_job(name)
        if job is None or job.namespace != namespace or job.user_id != user_id or job.status is not JobStatus.FAILED:
            raise GS2Error(
                404, "deadLetterJob", f"dead letter job not found: {name}", "jobQueue.deadLetterJob.error.notFound"
            )
        return job

    async def get_dead_letter_job_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
        deadLetterJobName: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)
        job = await self._dead_letter(namespaceName, userId, deadLetterJobName)
        return {"item": dead_letter_to_gs2(job, await self._attempts_shown(request, job), self.grn)}

    async def delete_dead_letter_job_by_user_id(
        self,
        request: Request,
        namespaceName: str,  # noqa: N803
        userId: str,  # noqa: N803
        deadLetterJobName: str,  # noqa: N803
    ) -> dict[str, JSON]:
        check_user_id(userId)

        async def delete() -> dict[str, JSON]:
            job = await self._dead_letter(namespaceName, userId, deadLetterJobName)
            attempts = await self._attempts_shown(request, job)
            await self.app.adelete(job.id, force=True)
            return {"item": dead_letter_to_gs2(job, attempts, self.grn)}

        return await self._deduplicated(request, f"dead {namespaceName} {userId} {deadLetterJobName}", delete)

    async def _attempts_shown(self, request: Request, job: Job) -> list[Attempt]:
        return [_shown(request, a, job.task) for a in await self.app.aattempts(job.id)]


def _shown(request: Request, attempt: Attempt, task: str) -> Attempt:
    """An attempt as the caller may see it (conveyor.server.common.visible_attempt): a game client's user token
    never reads internal exception text, tracebacks, or a `conveyor:` job's errors."""
    principal = getattr(request.state, "principal", None)
    return visible_attempt(attempt, task, admin=principal is not None and principal.is_admin)


def _ns_not_found(name: str) -> GS2Error:
    return GS2Error(404, "namespace", f"namespace not found: {name}", "jobQueue.namespace.error.notFound")


# ---- the identifier login ----------------------------------------------------------------------------------------


def build_identifier_router(
    auth: GS2Auth,
    *,
    expires_in: int = 3600,
    prefix: str = IDENTIFIER_PREFIX,
) -> APIRouter:
    """GS2's `POST /identifier/projectToken/login`, which `BasicGs2Credential(client_id, client_secret)` calls
    on `connect()`. It answers `{access_token, token_type, expires_in}`.

    With `auth.issue_admin_token_for(client_id, client_secret)` present, that decides (None → 401). Otherwise
    `client_secret` must itself be a valid Conveyor token (the admin token, or a user token whose user is
    `client_id`), and it becomes the project token: Conveyor has no separate client credentials, so this lets
    `BasicGs2Credential("admin", ADMIN_TOKEN)` — or a game client's `BasicGs2Credential(user, USER_TOKEN)` — work
    without code changes."""
    router = APIRouter(prefix=prefix, route_class=GS2Route, tags=["gs2"], responses=GS2_RESPONSES)

    async def login(request: Request) -> dict[str, JSON]:
        body = await _login_body(request)
        client_id = body.get("client_id")
        client_secret = body.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str) or not client_secret:
            raise unauthorized("client_id and client_secret are required")
        issuer = getattr(auth, "issue_admin_token_for", None)
        lifetime = expires_in
        if issuer is not None:
            token: str | None = await maybe_await(issuer(client_id, client_secret))
        else:
            principal = await principal_for(auth, client_secret)
            token = None
            if principal is not None and (principal.is_admin or principal.user_id == client_id):
                token = client_secret
                expires_at = getattr(principal, "expires_at", None)
                if isinstance(expires_at, datetime):
                    lifetime = max(0, int(expires_at.timestamp() - datetime.now(expires_at.tzinfo).timestamp()))
        if not token:
            raise unauthorized("invalid client_id or client_secret")
        return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}

    router.add_api_route(
        "/projectToken/login",
        login,
        methods=["POST"],
        openapi_extra=openapi_body(_LOGIN_BODY, "client_id", "client_secret"),
    )
    return router


async def _login_body(request: Request) -> Mapping[str, Any]:
    """The SDK posts gzip-compressed JSON; form posts (curl -d) are accepted too."""
    content_type = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in content_type:
        from urllib.parse import parse_qsl

        return dict(parse_qsl((await request.body()).decode(errors="replace")))
    return await json_body(request)


__all__ = [
    "GS2Auth",
    "GS2Error",
    "GS2Principal",
    "build_identifier_router",
    "build_router",
]
