"""Text from users printed safely: control characters escaped in every line Conveyor writes.

A task name, user id, payload message or error text can hold a newline (a forged log line after it), a carriage
return (overwriting the line on a terminal), ANSI escape sequences (colours, cursor moves, a cleared screen) or
Unicode line separators and bidirectional overrides (text that reads differently than it is). `printable` shows
each as a visible escape (`\\n`, `\\x1b`, `\\u202e`), so one record is always one line and reads as it is.

`install()` (run on `import conveyor`) applies it to every log record of Conveyor's loggers (`conveyor.*`): the
arguments of a record are escaped (or its message, when it has none: a task's own `ctx` log line); Conveyor's
format strings and tracebacks are left alone. It wraps the log
record factory, so it holds whatever handlers and formatters the application configures.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with control characters (C0 but tab, DEL, C1, line separators, bidi controls) escaped."""
    if text.isascii() and text.isprintable():
        return text
    return _CONTROL.sub(_escape, text)


def _safe_arg(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    return printable(value if isinstance(value, str) else str(value))


_installed = False


def install() -> None:
    """Escape the arguments of every `conveyor.*` log record (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not record.name.startswith("conveyor"):
            return record
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_safe_arg(a) for a in record.args)
        elif isinstance(record.args, dict) and record.args:
            record.args = {k: _safe_arg(v) for k, v in record.args.items()}
        elif isinstance(record.msg, str):  # no arguments: the message is the text (a handler's own log line)
            record.msg = printable(record.msg)
        return record

    logging.setLogRecordFactory(factory)
