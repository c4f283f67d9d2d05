"""`conveyor gs2 keys | stamp-sheet | stamp-task | login-body`: Conveyor's GS2 signing keys and what they sign.

Works on the store directly (no server needed), like `conveyor token`. GRNs use --gs2-region / --gs2-owner-id
(or CONVEYOR_GS2_REGION / CONVEYOR_GS2_OWNER_ID): give the same values as `conveyor serve`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import EXIT_USAGE, fail, load_app, run
from conveyor.cli.output import print_json

gs2_app = typer.Typer(name="gs2", help="GS2: signing keys, stamp sheets and tasks, signed login bodies.")
RegionOpt = Annotated[str | None, typer.Option("--gs2-region", envvar="CONVEYOR_GS2_REGION")]
OwnerOpt = Annotated[str | None, typer.Option("--gs2-owner-id", envvar="CONVEYOR_GS2_OWNER_ID")]


def _grn(region: str | None, owner: str | None) -> Any:
    from conveyor.server.gs2_models import Grn

    try:
        return Grn.from_env(region, owner)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


@gs2_app.command("key-create")
def key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Key name, unique on the store.")],
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Limit the key to one namespace.")] = None,
    region: RegionOpt = None,
    owner: OwnerOpt = None,
) -> None:
    """Create a signing key (HMAC-SHA256, kept in the store)."""
    from conveyor.server.gs2_keys import create_key

    app, grn = load_app(ctx), _grn(region, owner)

    async def body() -> dict[str, Any]:
        async with app:
            return (await create_key(app, name, namespace=namespace)).describe(grn)

    print_json(run(body))


@gs2_app.command("key-rotate")
def key_rotate(
    ctx: typer.Context,
    name: str,
    keep: Annotated[float, typer.Option("--keep", min=0, help="Seconds older versions still verify.")] = 86400.0,
    region: RegionOpt = None,
    owner: OwnerOpt = None,
) -> None:
    """Give a key a new version; signatures by older versions verify for --keep seconds more."""
    from conveyor.server.gs2_keys import rotate_key

    app, grn = load_app(ctx), _grn(region, owner)

    async def body() -> dict[str, Any]:
        async with app:
            return (await rotate_key(app, name, keep_previous_for=keep)).describe(grn)

    print_json(run(body))


@gs2_app.command("stamp-sheet")
def stamp_sheet(
    ctx: typer.Context,
    key: Annotated[str, typer.Option("--key", "-k", help="Signing key name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")],
    user: Annotated[str, typer.Option("--user", "-u")],
    job: Annotated[list[str], typer.Option("--job", "-j", help="SCRIPT or SCRIPT=ARGS_JSON; repeat up to 10.")],
    expires_in: Annotated[float, typer.Option("--expires-in", min=1)] = 3600.0,
    region: RegionOpt = None,
    owner: OwnerOpt = None,
) -> None:
    """Issue a signed stamp sheet that pushes the jobs to the user's queue once (push_by_stamp_sheet)."""
    from conveyor.server.gs2_stamp import issue_push_sheet

    entries = []
    for spec in job:
        script, sep, args = spec.partition("=")
        entries.append({"scriptId": script, "args": args if sep else "{}"})
    app, grn = load_app(ctx), _grn(region, owner)

    async def body() -> dict[str, Any]:
        async with app:
            issued = await issue_push_sheet(
                app, grn, key=key, namespace=namespace, user_id=user, jobs=entries, expires_in=expires_in
            )
            return {"stampSheet": issued.text, "keyId": issued.key_id, "sheetRequestId": issued.request_id}

    print_json(run(body))


@gs2_app.command("stamp-task")
def stamp_task(
    ctx: typer.Context,
    key: Annotated[str, typer.Option("--key", "-k")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")],
    user: Annotated[str, typer.Option("--user", "-u")],
    job_name: Annotated[str, typer.Option("--job-name", help="The job's id.")],
    expires_in: Annotated[float, typer.Option("--expires-in", min=1)] = 3600.0,
    region: RegionOpt = None,
    owner: OwnerOpt = None,
) -> None:
    """Issue a signed stamp task that deletes the user's job once (delete_by_stamp_task)."""
    from conveyor.server.gs2_stamp import issue_delete_task

    app, grn = load_app(ctx), _grn(region, owner)

    async def body() -> dict[str, Any]:
        async with app:
            issued = await issue_delete_task(
                app, grn, key=key, namespace=namespace, user_id=user, job_name=job_name, expires_in=expires_in
            )
            return {"stampTask": issued.text, "keyId": issued.key_id, "taskId": issued.request_id}

    print_json(run(body))


@gs2_app.command("login-body")
def login_body(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user the signed body logs in.")],
    key: Annotated[str, typer.Option("--key", "-k")],
    expires_in: Annotated[float, typer.Option("--expires-in", min=1, max=86400)] = 600.0,
    region: RegionOpt = None,
    owner: OwnerOpt = None,
) -> None:
    """Sign a login body for Gs2AuthRestClient.login_by_signature ({keyId, body, signature})."""
    from conveyor.server.gs2_auth import issue_login_body

    app, grn = load_app(ctx), _grn(region, owner)

    async def body() -> dict[str, str]:
        async with app:
            return await issue_login_body(app, grn, key=key, user_id=user, expires_in=expires_in)

    print_json(run(body))


def register(app: typer.Typer) -> None:
    app.add_typer(gs2_app)
