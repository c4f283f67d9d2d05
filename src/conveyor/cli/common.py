"""Plumbing shared by every `conveyor` command (and by commands other packages add, e.g. `token`).

Why it exists: every command needs the same three things done the same way — find the store and the user's app
from the global options, run an async body on one event loop, and turn the errors a user can expect into one short
line on stderr and an exit code a script can rely on (docs/cli.md). Keeping that here means a new command cannot
forget it, and no expected error ever ends in a traceback.

Exit codes: 0 ok, 1 the operation failed (any ConveyorError), 2 usage error (bad option, bad JSON, bad store URL,
an --app that cannot be loaded), 3 not found, 4 store unavailable.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.markup import escape as rich_escape

from conveyor.app import Conveyor
from conveyor.demo import register_demo
from conveyor.errors import AddressInUse, ConveyorError, NotFound, StoreUnavailable, UnsupportedURL
from conveyor.logs import LogFormat, check_level, configure, make_handler
from conveyor.logsafe import printable
from conveyor.loops import run_async
from conveyor.store import DEFAULT_URL
from conveyor.store.urls import redact

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_ADDRESS_IN_USE = 5

PIPE_WIDTH = 200


class _Console(Console):
    """A Rich console whose width is decided at print time: COLUMNS when set, the terminal's width on a terminal,
    and 200 columns otherwise — so a table piped into grep or a file keeps whole ids instead of being squeezed
    into 80 columns. (Rich resolves sys.stdout/sys.stderr at write time too, so CliRunner captures work.)"""

    @property
    def size(self) -> ConsoleDimensions:
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit():
            return ConsoleDimensions(int(columns), 25)
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(PIPE_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


@dataclass(slots=True)
class State:
    """The global options, kept on the root click context (`ctx.obj`)."""

    store_url: str | None = None  # given with --store / CONVEYOR_URL; None means the default
    app_spec: str | None = None  # --app module:attr / CONVEYOR_APP
    log_format: LogFormat = "text"  # --log-format / CONVEYOR_LOG_FORMAT

    @property
    def url(self) -> str:
        return self.store_url or DEFAULT_URL


def setup_logging(fmt: LogFormat, level: str) -> None:
    """Log lines on stderr so stdout stays the jobs' own output (the demo task prints there). Text: Rich's handler on
    a terminal, plain timestamped lines when stderr is a file or a pipe (log collectors, systemd, docker); JSON: one
    object per line whatever stderr is. Uvicorn's loggers go through the same handler (conveyor.logs.configure)."""
    try:
        numeric = check_level(level)
    except ValueError as exc:
        fail(f"--log-level: {exc}", EXIT_USAGE)
    handler: logging.Handler
    if fmt == "text" and err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = make_handler(fmt)
    configure(numeric, handler)


def get_state(ctx: typer.Context) -> State:
    """The global options, whichever sub-command context we are called from."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def escape(text: str) -> str:
    """User data for a Rich cell or line: control characters shown escaped (one line, no terminal escape
    sequences: conveyor.logsafe) and Rich markup escaped (a task named `[red]x` prints as written)."""
    return rich_escape(printable(text))


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", markup=True, soft_wrap=True)


def _unavailable_text(exc: BaseException) -> str | None:
    """Recognise driver errors that mean "cannot reach the store" in case a store lets one through."""
    if isinstance(exc, StoreUnavailable):
        return exc.message
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot reach the store: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return f"cannot open the SQLite database: {exc}"
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith(("psycopg", "redis")) and ("Connection" in name or "Operational" in name or "Timeout" in name):
        return f"cannot reach the store: {exc}"
    return None


def exit_code_for(exc: BaseException) -> int | None:
    """The documented exit code for an expected error, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, UnsupportedURL):
        return EXIT_USAGE
    if isinstance(exc, AddressInUse):
        return EXIT_ADDRESS_IN_USE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if _unavailable_text(exc) is not None:
        return EXIT_UNAVAILABLE
    if isinstance(exc, ConveyorError):
        return EXIT_FAILED
    return None


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn expected errors into `error: …` on stderr plus the documented exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        unavailable = _unavailable_text(exc)
        message = unavailable if unavailable is not None else getattr(exc, "message", str(exc))
        fail(message, code)


def run(body: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body on a fresh event loop, with the CLI's error handling."""

    with handle_errors():
        return run_async(body)


def import_app(spec: str) -> Conveyor:
    """Load `module:attr` (or `module`, which then must define `app`), like uvicorn does.

    The current directory is put on sys.path first so `conveyor --app tasks:app` finds ./tasks.py. `attr` may be
    a Conveyor or a function returning one (an app factory)."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        fail(f"--app must look like module:attribute (e.g. myproject.tasks:app), got {spec!r}", EXIT_USAGE)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            fail(f"cannot load --app {spec!r}: no module named {exc.name!r} (run from your project directory)", 2)
        raise
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            fail(f"cannot load --app {spec!r}: module {module_name!r} has no attribute {attr!r}", EXIT_USAGE)
    if not isinstance(target, Conveyor) and callable(target) and _takes_no_arguments(target):
        target = target()
    if not isinstance(target, Conveyor):
        fail(f"--app {spec!r} is a {type(target).__name__}, not a conveyor.Conveyor app", EXIT_USAGE)
    return target


def _takes_no_arguments(fn: Callable[..., object]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def load_app(ctx: typer.Context, *, demo: bool = False) -> Conveyor:
    """The Conveyor app a command works on: the user's (--app) or a bare one on --store.

    With --app the app keeps its own store URL; an explicit --store that differs is reported, not silently mixed.
    `demo=True` also registers the demo task (SPEC §6)."""
    state = get_state(ctx)
    with handle_errors():
        if state.app_spec:
            app = import_app(state.app_spec)
            if state.store_url and state.store_url != app.url:
                warn(
                    f"--app {state.app_spec} uses its own store {redact(app.url)}; ignoring --store {redact(state.url)}"
                )
        else:
            app = Conveyor(state.url)
        if demo:
            register_demo(app)
    return app
