"""The `conveyor` command line (Typer + Rich). `conveyor.cli.app` is the Typer app; `main` the console script.

Commands live in sub-modules that each define `register(app: typer.Typer) -> None`. Besides the built-in ones,
any other module dropped into this package with a `register` function is picked up at start (the server package
adds `token` this way), so a new command never has to edit this file. See docs/cli.md, "Adding a command".
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from conveyor.cli.common import EXIT_USAGE, State, console, fail, get_state, setup_logging
from conveyor.logs import check_format
from conveyor.version import __version__

__all__ = ["State", "app", "main"]

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a job queue for Python on SQLite, PostgreSQL or Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"conveyor {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            "-s",
            envvar="CONVEYOR_URL",
            help="Store URL: sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0. "
            "[default: sqlite:///conveyor.db]",
            show_default=False,
        ),
    ] = None,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-a",
            envvar="CONVEYOR_APP",
            help="Your Conveyor app with its tasks, as module:attribute (e.g. myproject.tasks:app).",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="CONVEYOR_LOG_FORMAT",
            help="Log lines as 'text' (Rich on a terminal, timestamped lines otherwise) or 'json' (one object per "
            "line, uvicorn's included).",
        ),
    ] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Conveyor: a job queue for Python on SQLite, PostgreSQL or Redis."""
    state = get_state(ctx)
    state.store_url = store
    state.app_spec = app_spec
    try:
        state.log_format = check_format(log_format)
    except ValueError as exc:
        fail(f"--log-format: {exc}", EXIT_USAGE)
    setup_logging(state.log_format, "WARNING")  # every command's warnings in the chosen format; worker/serve: INFO


_BUILT_IN = ("jobs", "admin", "schedules", "run")
_NOT_COMMANDS = frozenset({"common", "output", "loop", "__main__"})


def _register_all() -> None:
    for name in _BUILT_IN:
        importlib.import_module(f"{__name__}.{name}").register(app)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _BUILT_IN or info.name in _NOT_COMMANDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_all()


def _hide_flag_types() -> None:
    """Help shows `<int>`, `<str>` beside options that take a value; a flag takes none, so Typer's `<bool>` beside
    `--json`, `--version` or `--help` only misleads (it reads as "pass true or false"). Typer offers no setting for
    it (and builds `--help` itself), so the console script replaces the one method that renders the type: flags
    render none. Only the `conveyor` process is affected, never a program that imports this package."""
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def main() -> None:
    """Console-script entry point (`conveyor`)."""
    _hide_flag_types()
    app(prog_name="conveyor")
