"""`conveyor token issue | create | list | revoke | rotate-secret`: user tokens, named admin tokens, the secret.

Everything here works on the store directly — no running server needed — and agrees with every server on the same
store: admin tokens are kept there (as hashes) and read by the servers, user tokens are signed with the servers'
secret (the store's, or `CONVEYOR_TOKEN_SECRET` when the servers use it, which this command then checks). See
`conveyor.server.tokens`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from conveyor.cli.common import EXIT_USAGE, console, err_console, fail, load_app, run
from conveyor.cli.output import print_json, print_list

if TYPE_CHECKING:
    from conveyor.server.auth import IssuedToken
    from conveyor.server.tokens import AdminToken, AuthState, Created

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class _TokenGroup(TyperGroup):
    """Points users of the old `conveyor token USER_ID` to `conveyor token issue USER_ID`."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            fail(
                f"no command {args[0]!r}: to issue a user token run `conveyor token issue {args[0]}` "
                "(see `conveyor token --help`)",
                EXIT_USAGE,
            )
        return super().resolve_command(ctx, args)


token_app = typer.Typer(
    name="token",
    cls=_TokenGroup,
    no_args_is_help=True,
    help="User tokens, named admin tokens (kept only as hashes) and the user-token signing secret.",
)


@token_app.callback(invoke_without_command=True)
def _group(
    ctx: typer.Context,
    admin: Annotated[bool, typer.Option("--admin", hidden=True)] = False,
) -> None:
    if ctx.invoked_subcommand is None and not admin:
        console.print(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)
    if admin:
        fail(
            "admin tokens are kept only as hashes and cannot be shown again: create a new one with "
            "`conveyor token create NAME` (and `conveyor token list` / `revoke NAME` for the others)",
            EXIT_USAGE,
        )


@token_app.command("issue")
def issue(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user the token is for.")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Limit the token to one namespace.")
    ] = None,
    ttl: Annotated[float, typer.Option("--ttl", min=1, help="Seconds until the token expires (at most 366 days).")] = (
        86_400.0
    ),
    as_json: JsonOpt = False,
) -> None:
    """Issue a signed, expiring user token that reaches only USER_ID's jobs, results, Run and events."""
    from conveyor.server.auth import aissue_user_token  # FastAPI only when this command runs

    app = load_app(ctx)

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


@token_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the token: 1-128 of [A-Za-z0-9-_.], unique among active.")],
    as_json: JsonOpt = False,
) -> None:
    """Create a named admin token. It is printed this once: the store keeps only its hash."""
    from conveyor.server import tokens

    app = load_app(ctx)

    async def body() -> Created:
        async with app:
            return await tokens.create_admin_token(app, name)

    created = run(body)
    if as_json:
        print_json({**created.record.public(), "token": created.token})
        return
    console.print(created.token, markup=False, soft_wrap=True)
    err_console.print(
        f"Admin token {name!r} created. It is shown this once (the store keeps only its hash); servers on this "
        "store accept it within seconds.",
        markup=False,
    )


@token_app.command("list")
def list_tokens(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every named admin token (revoked ones too): name, where it came from, when, and a hint of its end."""
    from conveyor.server import tokens

    app = load_app(ctx)

    async def body() -> list[AdminToken]:
        async with app:
            return await tokens.list_admin_tokens(app)

    found = run(body)
    if as_json:
        print_list([t.public() for t in found])
        return
    table = Table(title=f"{sum(t.active for t in found)} active admin token(s)", title_justify="left")
    for column in ("name", "source", "created", "hint", "state"):
        table.add_column(column)
    for t in found:
        state = "active" if t.active else f"revoked {t.revoked_at}"
        table.add_row(t.name, t.source, t.created_at, t.hint or "—", state)
    console.print(table)


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The admin token to revoke.")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an admin token: refused by every server on this store within seconds. The last one cannot be
    revoked (create another first)."""
    from conveyor.server import tokens

    app = load_app(ctx)

    async def body() -> AdminToken:
        async with app:
            return await tokens.revoke_admin_token(app, name)

    revoked = run(body)
    if as_json:
        print_json(revoked.public())
    else:
        console.print(f"Revoked admin token {name!r} at {revoked.revoked_at}", markup=False)


@token_app.command("rotate-secret")
def rotate_secret(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace the user-token signing secret: every user token issued so far stops working on every server."""
    import os

    from conveyor.server import tokens

    if not yes and not typer.confirm("Every user token issued so far will stop working. Rotate the secret?"):
        raise typer.Exit(1)
    app = load_app(ctx)

    async def body() -> AuthState:
        async with app:
            return await tokens.rotate_token_secret(app, env_secret=os.environ.get("CONVEYOR_TOKEN_SECRET") or None)

    state = run(body)
    answer: dict[str, Any] = {"rotated_at": state.secret_rotated_at}
    if as_json:
        print_json(answer)
    else:
        console.print(
            f"User-token secret rotated at {state.secret_rotated_at}; issue new user tokens "
            "(conveyor token issue USER_ID).",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(token_app)
