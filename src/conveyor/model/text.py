"""Text and JSON that every store and every wire format can carry: names, task names, strict JSON parsing,
and the payload/result encoders (one encoding per request: `CheckedJSON`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

from conveyor.errors import PayloadTooLarge, ValidationError
from conveyor.model.base import BAD_TEXT_RE, DEFAULT_MAX_PAYLOAD_BYTES, JSON, NAME_RE

MAX_RESULT_BYTES = 5 * 1024 * 1024  # GS2 JobResult.result ≤ 5 MB
MAX_TASK_NAME = 1024
RESERVED_TASK_PREFIX = "conveyor:"
"""Task names under this prefix belong to Conveyor itself (webhook deliveries, future internals): no public
enqueue, registration or HTTP call may create them, so a caller can never forge one of Conveyor's own jobs."""
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class RawJSON:
    """A payload given as JSON text, kept exactly as written: `app.enqueue("grant", RawJSON('{"item": "sword"}'))`.

    Why: GS2 pushes `args` as a JSON string and reads back that same string; re-serialising it would change its
    spacing and key order. The handler still gets the parsed value; the text (less surrounding whitespace) is what
    the store keeps and `Job.payload_json` gives back. Strict JSON (no NaN/Infinity), within the payload limit."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValidationError(f"RawJSON takes the JSON text as a str, got {type(text).__name__}", field="payload")
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def stored_text(self) -> str:
        """What the stores keep: the text less any whitespace around it (PostgreSQL's json type trims it, so every
        store does, and all give back the same string)."""
        return self.text.strip(" \t\n\r")

    def decode(self, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> JSON:
        """The parsed value, after the checks every payload gets (valid JSON, no NUL or lone surrogate, size)."""
        text = self.text
        if len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
            raise PayloadTooLarge(
                f"payload is {len(text.encode())} bytes of JSON; the limit is {max_bytes} bytes. "
                "Store large data elsewhere and pass a reference, or raise max_payload_bytes.",
                field="payload",
            )
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"payload is not valid JSON text: {exc}", field="payload") from None
        if "\\u" in text or not text.isascii():  # NUL or a lone surrogate: no store can keep it
            check_json_text(value, "payload")
        return value


def _refuse_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not valid JSON")


_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _not_json(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_c_encoder() -> Callable[[JSON, int], Sequence[str]] | None:
    """The json module's C encoder, built once: `JSONEncoder.encode` rebuilds it on every call, which was half of
    the cost of encoding a small payload on the enqueue hot path. Same output and errors as _PAYLOAD_ENCODER."""
    if c_make_encoder is None:  # pragma: no cover - interpreters without the C accelerator
        return None
    encoder: Callable[[JSON, int], Sequence[str]] = c_make_encoder(
        {}, _not_json, encode_basestring, None, ":", ",", False, False, False
    )
    return encoder


_c_encoder = _make_c_encoder()


def _encode_json(payload: JSON) -> str:
    global _c_encoder
    if _c_encoder is None:
        return _PAYLOAD_ENCODER.encode(payload)
    try:
        return "".join(_c_encoder(payload, 0))
    except BaseException:
        _c_encoder = _make_c_encoder()  # a failed run can leave entries in its circular-reference markers
        raise


class CheckedJSON(RawJSON):
    """A payload already checked and encoded by its caller, handed over with its text so enqueue does not encode
    it again: the HTTP API parses a request once, checks and encodes its payload once (to answer 400/413 before any
    store call), and enqueues this. Build one with `CheckedJSON.encode(value)`; the text is the canonical encoding,
    not the caller's spelling (for that, use `RawJSON`)."""

    __slots__ = ("value",)

    def __init__(self, value: JSON, text: str) -> None:
        super().__init__(text)
        self.value = value

    @classmethod
    def encode(cls, value: JSON, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> CheckedJSON:
        """Check and encode `value` once (the checks of `encode_payload`: JSON only, no NUL or lone surrogate,
        within `max_bytes`)."""
        return cls(value, encode_payload(value, max_bytes))

    def decode(self, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> JSON:
        return self.value


def encode_payload(payload: JSON, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Serialise a payload, refusing non-JSON values and oversize payloads with a clear error."""
    try:
        text = _encode_json(payload)
    except RecursionError:
        raise ValidationError("payload is nested too deeply to encode as JSON", field="payload") from None
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"payload must be JSON-serialisable (dict, list, str, int, float, bool or None): {exc}", field="payload"
        ) from None
    # PostgreSQL cannot store NUL and nothing can encode a lone surrogate: no store accepts either. The encoder
    # writes NUL as the escape `\u0000` and a lone surrogate as itself (ensure_ascii=False), so both checks are
    # a scan in C that only an offending payload gets past.
    if ("\\u0000" in text and _contains_nul(payload)) or (not text.isascii() and _SURROGATE_RE.search(text)):
        check_json_text(payload, "payload")
    if len(text) * 4 <= max_bytes:  # UTF-8 needs at most 4 bytes a character: surely within the limit
        return text
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes when JSON-encoded; the limit is {max_bytes} bytes. "
            "Store large data elsewhere and pass a reference, or raise max_payload_bytes.",
            field="payload",
        )
    return text


def _contains_nul(value: JSON) -> bool:
    """Whether any string (key or value) inside a JSON value holds NUL. Only called when the encoded text hints so."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


def encode_result(result: JSON) -> str:
    """Serialise a handler's return value for its attempt record (≤ 5 MiB, GS2's limit)."""
    try:
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"task result must be JSON-serialisable: {exc}", field="result") from None
    if not text.isascii() and _SURROGATE_RE.search(text):
        check_json_text(result, "result")
    if len(text) > MAX_RESULT_BYTES:
        raise PayloadTooLarge(f"task result is {len(text)} bytes; the limit is {MAX_RESULT_BYTES}", field="result")
    return text


# ---- text that every store and every wire format can carry ---------------------------------------------------


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or sent, or None. NUL cannot be kept in PostgreSQL text or JSONB; a lone
    UTF-16 surrogate (JSON's `"\\ud800"` without its pair) is not Unicode at all and cannot be encoded as UTF-8,
    so no store, log or answer can carry it. Both are refused on every surface alike."""
    found = BAD_TEXT_RE.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "must not contain the NUL character (\\u0000); encode binary data as base64"
    return (
        f"contains a lone UTF-16 surrogate (\\u{ord(char):04x}) at character {found.start()}, which is not valid "
        "Unicode; send the character itself, or both halves of its surrogate pair"
    )


def check_text(value: str, field: str) -> None:
    """Raise ValidationError naming `field` if `value` holds NUL or a lone surrogate (see text_problem)."""
    if value.isascii() and "\x00" not in value:
        return
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}", field=field)


def find_bad_text(value: JSON, path: str, *, depth: int = 0) -> tuple[str, str] | None:
    """The path (`payload.items[2].name`, or `payload.<key>` for a bad key) and problem of the first string in a
    JSON value that cannot be stored (see text_problem), or None."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (path, problem)
    if depth > 200:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                problem = text_problem(key)
                if problem is not None:
                    return (f"{path}.{_printable_key(key)}", f"has a key that {problem}")
            found = find_bad_text(item, f"{path}.{_printable_key(key)}", depth=depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_bad_text(item, f"{path}[{index}]", depth=depth + 1)
            if found is not None:
                return found
    return None


def check_json_text(value: JSON, field: str) -> None:
    """Raise ValidationError naming the exact place (`payload.a[1]`) of a string that cannot be stored."""
    found = find_bad_text(value, field)
    if found is not None:
        where, problem = found
        raise ValidationError(f"{where} {problem}", field=where)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (JSON numbers are finite); send a number or null")


def loads_json(text: str | bytes, field: str) -> JSON:
    """Parse JSON text strictly, for every surface that reads JSON from outside (HTTP bodies, GS2 `args`, the
    CLI's payload argument): `NaN`/`Infinity` (which Python's parser accepts but JSON does not have) and strings
    that no store can keep (lone surrogates, NUL) are refused with a ValidationError naming the place."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValidationError(f"{field} is nested too deeply", field=field) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the constants above
        raise ValidationError(f"{field} is not valid JSON: {exc}", field=field) from None
    check_json_text(value, field)
    return value


def _printable_key(key: object) -> str:
    text = str(key)
    return BAD_TEXT_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)[:64]


_VALID_NAMES: set[str] = set()  # names already checked (few distinct ones; saves a regex per enqueue)


def validate_name(value: object, what: str) -> None:
    if isinstance(value, str) and value in _VALID_NAMES:
        return
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 characters of letters, digits, '-', '_' or '.', got {value!r}", field=what
        )
    if len(_VALID_NAMES) < 10_000:
        _VALID_NAMES.add(value)


_VALID_TASKS: set[str] = set()  # task names already checked (saves the checks per enqueue)


def validate_task_name(task: object) -> None:
    if isinstance(task, str) and task in _VALID_TASKS:
        return
    if not isinstance(task, str) or not task.strip():
        raise ValidationError("task is required: give the name of a registered task", field="task")
    if not task.isascii() or "\x00" in task:
        problem = text_problem(task)
        if problem is not None:
            raise ValidationError(f"task name {problem}", field="task")
    if len(task) > MAX_TASK_NAME:
        raise ValidationError(f"task name is {len(task)} characters; the limit is {MAX_TASK_NAME}", field="task")
    if len(_VALID_TASKS) < 10_000:
        _VALID_TASKS.add(task)


def is_reserved_task(task: object) -> bool:
    """Whether `task` is one of Conveyor's own task names (`conveyor:...`)."""
    return isinstance(task, str) and task.startswith(RESERVED_TASK_PREFIX)


def check_public_task_name(task: object, field: str = "task") -> None:
    """The rule every public way in (Python enqueue and register, cron, HTTP, CLI) applies: `conveyor:` names
    are reserved. Conveyor's internals create their jobs through `conveyor.enqueue.enqueue_system` instead."""
    if is_reserved_task(task):
        raise ValidationError(
            f"task {task!r} is reserved: names starting with {RESERVED_TASK_PREFIX!r} belong to Conveyor's own "
            "jobs (e.g. webhook deliveries) and cannot be enqueued or registered by callers; choose another name",
            field=field,
        )


# ---- values passed to Store.finish ------------------------------------------------------------------------------


def dumps_compact(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
