"""`conveyor token`: issue a user token, or show the admin token, for the server on this store.

Tokens are signed with the secret the server keeps in the store, so this command works offline from any machine
that can reach the store — no running server needed — and its tokens are accepted by every API node on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.common import console, load_app, run
from conveyor.cli.output import print_json

if TYPE_CHECKING:
    from conveyor.server.auth import IssuedToken


def token(
    ctx: typer.Context,
    user_id: Annotated[str | None, typer.Argument(help="The user the token is for (omit with --admin).")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Limit the token to one namespace.")
    ] = None,
    ttl: Annotated[float, typer.Option("--ttl", min=1, help="Seconds until the token expires.")] = 86_400.0,
    admin: Annotated[bool, typer.Option("--admin", help="Print the admin token instead (created if none).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable output.")] = False,
) -> None:
    """Issue a signed, expiring user token that reaches only USER_ID's jobs, results, Run and events."""
    from conveyor.server.auth import aadmin_token, aissue_user_token  # FastAPI only when this command runs

    app = load_app(ctx)
    if admin:

        async def admin_body() -> str:
            async with app:
                return await aadmin_token(app)

        value = run(admin_body)
        if as_json:
            print_json({"token": value, "kind": "admin"})
        else:
            console.print(value, markup=False, soft_wrap=True)
        return
    if not user_id:
        raise typer.BadParameter("give a USER_ID, or --admin for the admin token")

    async def body() -> IssuedToken:
        async with app:
            return await aissue_user_token(app, user_id, namespace=namespace, ttl=ttl)

    issued = run(body)
    if as_json:
        print_json(
            {
                "token": issued.token,
                "user_id": issued.user_id,
                "namespace": issued.namespace,
                "expires_at": issued.expires_at.isoformat(),
            }
        )
    else:
        console.print(issued.token, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("token")(token)
