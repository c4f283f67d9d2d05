"""Control characters from user data never reach a printed line raw: the demo's output, Conveyor's log records,
the CLI's tables and errors (SPEC: one line per record; no forged lines, no terminal escape sequences)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conveyor.demo import delay_print
from conveyor.logsafe import printable

HOSTILE = "hello\n[2026-01-01 00:00:00] forged line\r\x1b[31mred\x1b[0m\u2028\u202eevil\x07"


def test_printable_escapes_every_control_character() -> None:
    out = printable(HOSTILE)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x07" not in out
    assert "\u2028" not in out and "\u202e" not in out
    assert out.startswith("hello\\n[2026-01-01 00:00:00] forged line\\r\\x1b[31m")
    assert printable("plain text, tabs\tand ünïcode") == "plain text, tabs\tand ünïcode"


def test_demo_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    delay_print({"message": HOSTILE})
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "forged line" in out


def test_conveyor_log_records_are_escaped(caplog: pytest.LogCaptureFixture) -> None:
    import conveyor  # noqa: F401  (installs the escaping)

    with caplog.at_level(logging.INFO):
        logging.getLogger("conveyor.worker").warning("task %s failed: %s", HOSTILE, ValueError(HOSTILE))
        logging.getLogger("conveyor.task").info(HOSTILE)  # a handler's own line, no arguments
        logging.getLogger("someone.else").info("untouched %s", "a\nb")
    lines = [r.getMessage() for r in caplog.records]
    assert all("\n" not in line and "\x1b" not in line for line in lines[:2])
    assert lines[2] == "untouched a\nb"  # other libraries' records are theirs


def test_cli_tables_and_errors_escape_user_data(tmp_path: Path) -> None:
    from conveyor import Conveyor
    from tests.cli.conftest import Cli

    cli = Cli(f"sqlite:///{tmp_path}/cli.db")
    with Conveyor(cli.url) as app:
        app.enqueue("t\x1b[2Jx", {"a": 1}, user_id="u\nforged")
    result = cli("jobs", "list")
    assert result.exit_code == 0, result.output
    assert "\x1b[2J" not in result.output and "\\x1b[2Jx" in result.output
    assert "u\\nforged" in result.output
    result = cli("jobs", "show", "nope\x1b[31m")
    assert "\x1b[31m" not in result.output


def test_cli_refuses_a_lone_surrogate_and_warns_about_unserved_tasks(tmp_path: Path) -> None:
    from conveyor import Conveyor
    from tests.cli.conftest import Cli

    cli = Cli(f"sqlite:///{tmp_path}/cli2.db")
    result = cli("enqueue", "t", '{"a": "\\ud800"}')
    assert result.exit_code == 2 and "payload.a" in result.output and "surrogate" in result.output
    result = cli("enqueue", "t", '{"a": NaN}')
    assert result.exit_code == 2 and "NaN" in result.output
    result = cli("enqueue", "t", '{"a": 1}')
    assert result.exit_code == 0 and "no live worker has registered task 't'" in result.output
    with Conveyor(cli.url) as app:
        assert app.stats().total == 1
