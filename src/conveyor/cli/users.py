"""`conveyor users dump | clean | import`: a user's data as one JSON document (GS2 user data, from the command line).

Works on the store directly, like `conveyor token`: no server needed. The document is `conveyor.userdata`'s (every
job of the user in every namespace, each with its attempts; dead letters are the failed ones).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import EXIT_USAGE, console, fail, load_app, run
from conveyor.cli.output import print_json
from conveyor.userdata import clean_user, dump_user, import_user

users_app = typer.Typer(name="users", help="A user's data: dump, clean (delete all), import.", no_args_is_help=True)


@users_app.command("dump")
def dump(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user whose jobs, attempts and dead letters to write out.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write every job, attempt and dead letter of USER_ID as one JSON document."""
    app = load_app(ctx)

    async def body() -> dict[str, Any]:
        async with app:
            return await dump_user(app, user_id)

    document = run(body)
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"Wrote {len(document['jobs'])} jobs of {user_id!r} to {output}", markup=False)


@users_app.command("clean")
def clean(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user whose data to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every job and attempt of USER_ID, in every namespace, atomically (account deletion)."""
    if not yes and not typer.confirm(f"Delete every job and attempt of user {user_id!r}?"):
        raise typer.Exit(1)
    app = load_app(ctx)

    async def body() -> int:
        async with app:
            return await clean_user(app, user_id)

    console.print(f"Deleted {run(body)} jobs of {user_id!r}.", markup=False)


@users_app.command("import")
def import_(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user the dump belongs to (a dump of anyone else is refused).")],
    path: Annotated[Path, typer.Argument(help="A dump written by `conveyor users dump` (or the GS2 dump URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the import report as JSON.")] = False,
) -> None:
    """Restore USER_ID's jobs from a dump, all of them exactly (finished ones and dead letters with their tries);
    jobs whose ids exist already are left alone."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read the dump {path}: {exc}", EXIT_USAGE)
    app = load_app(ctx)

    async def body() -> dict[str, Any]:
        async with app:
            return await import_user(app, user_id, document)

    report = run(body)
    if as_json:
        print_json(report)
    else:
        console.print(
            f"Restored {len(report['restored'])} jobs of {user_id!r} with their tries; "
            f"{len(report['alreadyPresent'])} already present.",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(users_app)
