"""A job's fields and an attempt's, declared once with the kind of each, and the row codecs every store builds from
them.

Why: a job's fields used to be spelled out by hand in every store (positional row mappers for SQLite and
PostgreSQL, a hash decoder for Redis, a parallel mutable record in the memory store), so a new field meant the same
edit in a dozen places and a missed one was a silent bug. Now `JOB_FIELDS` follows `model.Job` (its order, its
names) plus a kind per field, and a store says only how it keeps each *kind* (a time as integer microseconds, a
status as text…); `row_decoder` / `mapping_decoder` turn that into one decoding function per store. Adding a field
to `Job` means adding its kind in `_JOB_KINDS` (the import fails until it is there), a migration for each store, and
the statements that write it.

The decoders are generated as the source of one constructor call and compiled once at import — the way
`dataclasses` builds `__init__` — so decoding a row costs what a hand-written mapper costs: no loop over fields, no
`getattr`, no per-field function call where the store needs no conversion. They are hot paths (every claim, every
listing), measured in docs/choices.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from conveyor.model import Attempt, Job

__all__ = [
    "ATTEMPT_FIELDS",
    "JOB_FIELDS",
    "STORED_ATTEMPT_FIELDS",
    "STORED_JOB_FIELDS",
    "FieldKind",
    "FieldSpec",
    "column_names",
    "copier",
    "field_index",
    "mapping_decoder",
    "row_decoder",
]

T = TypeVar("T")

FieldKind = Literal["text", "int", "bool", "json", "time", "status", "outcome"]
"""How a value is kept: `text` a string, `int`, `bool`, `json` any JSON value (payload, result), `time` an aware UTC
datetime, `status` a JobStatus, `outcome` an AttemptOutcome. A store maps each kind to its own storage."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field: its name (the dataclass attribute and, where a store names its columns or hash fields after it,
    the column), its kind, whether it may be None, and whether a store keeps it (False: computed on the way out,
    like `Job.duplicate`, or another view of a stored field, like `Job.payload_json`)."""

    name: str
    kind: FieldKind
    optional: bool
    stored: bool = True


# Every Job field with its kind; a trailing "?" marks an optional one, and a leading "-" one that no store keeps.
_JOB_KINDS: dict[str, str] = {
    "id": "text",
    "namespace": "text",
    "queue": "text",
    "task": "text",
    "payload": "json",
    "status": "status",
    "priority": "int",
    "run_at": "time",
    "attempts": "int",
    "max_attempts": "int",
    "try_number": "int",
    "created": "time",
    "updated": "time",
    "user_id": "text?",
    "group_key": "text?",
    "unique_key": "text?",
    "started_at": "time?",
    "finished_at": "time?",
    "lease_expires_at": "time?",
    "worker_id": "text?",
    "last_error": "text?",
    "result": "json?",
    "cancel_requested": "bool",
    "lease_token": "text?",
    "duplicate": "-bool",
    "payload_json": "-text?",
    "timed_out_at": "time?",
    "concurrency_key": "text?",
}

_ATTEMPT_KINDS: dict[str, str] = {
    "job_id": "text",
    "try_number": "int",
    "outcome": "outcome",
    "status_code": "int",
    "started_at": "time",
    "finished_at": "time",
    "worker_id": "text?",
    "result": "json?",
    "error": "text?",
    "traceback": "text?",
    "lease_token": "text?",
}


def _fields_of(cls: type[Any], kinds: Mapping[str, str]) -> tuple[FieldSpec, ...]:
    names = [f.name for f in dataclasses.fields(cls)]
    missing, unknown = set(names) - set(kinds), set(kinds) - set(names)
    if missing or unknown:
        raise TypeError(
            f"conveyor.codec: {cls.__name__}'s fields and their kinds disagree (no kind for {sorted(missing)}, a kind "
            f"for no field {sorted(unknown)}); give every field of {cls.__name__} its kind"
        )
    out: list[FieldSpec] = []
    for name in names:  # the dataclass's order
        spec = kinds[name]
        stored = not spec.startswith("-")
        spec = spec.lstrip("-")
        out.append(FieldSpec(name, spec.rstrip("?"), spec.endswith("?"), stored))  # type: ignore[arg-type]
    return tuple(out)


JOB_FIELDS: tuple[FieldSpec, ...] = _fields_of(Job, _JOB_KINDS)
"""Every field of `model.Job`, in its order."""
STORED_JOB_FIELDS: tuple[FieldSpec, ...] = tuple(f for f in JOB_FIELDS if f.stored)
"""What a store keeps of a job: its columns (PostgreSQL, SQLite) or hash fields (Redis), in this order."""
ATTEMPT_FIELDS: tuple[FieldSpec, ...] = _fields_of(Attempt, _ATTEMPT_KINDS)
STORED_ATTEMPT_FIELDS: tuple[FieldSpec, ...] = tuple(f for f in ATTEMPT_FIELDS if f.stored)


def column_names(fields: Sequence[FieldSpec]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


def field_index(fields: Sequence[FieldSpec], name: str) -> int:
    """The position of field `name` in a row laid out as `fields` (for the few places that change a row in place)."""
    for i, f in enumerate(fields):
        if f.name == name:
            return i
    raise KeyError(name)


Convert = Mapping[str, Callable[[Any], Any] | Mapping[Any, Any] | None]
"""kind → the function (or the dict, looked up by subscript: cheaper than a call) that turns a stored value into the
model's; None keeps it as it comes."""


def row_decoder(
    cls: type[T], fields: Sequence[FieldSpec], convert: Convert, *, name: str = "decode"
) -> Callable[..., T]:
    """`decode(row, **rest)`: the instance whose stored fields are `row[0..]` in the order of `fields`; the fields
    not in `fields` are keyword arguments with the dataclass's defaults (`duplicate=True`, `payload_json=…`)."""
    args = {f.name: _convert(f, f"r[{i}]", convert, may_be_none=f.optional) for i, f in enumerate(fields)}
    return _compile(cls, "r", args, convert, name)


def mapping_decoder(
    cls: type[T],
    fields: Sequence[FieldSpec],
    convert: Convert,
    *,
    sources: Mapping[str, str] | None = None,
    name: str = "decode",
) -> Callable[..., T]:
    """`decode(mapping, **rest)` for a mapping keyed by field name (a Redis hash, a JSON object). A field that has a
    default in the dataclass may be absent from the mapping (then it gets that default); the others must be there.
    `sources` names another key to read a field from (`{"payload_json": "payload"}`: the same stored text)."""
    defaults = _defaults(cls)
    args: dict[str, str] = {}
    for f in fields:
        key = repr((sources or {}).get(f.name, f.name))
        if f.name in defaults and convert.get(f.kind) is None:
            args[f.name] = f"h.get({key}, _default_{f.name})"
        elif f.name in defaults:
            value = _convert(f, f"_v_{f.name}", convert, may_be_none=False)
            args[f.name] = f"({value} if (_v_{f.name} := h.get({key})) is not None else _default_{f.name})"
        else:
            args[f.name] = _convert(f, f"h[{key}]", convert, may_be_none=f.optional)
    return _compile(cls, "h", args, convert, name)


def copier(cls: type[T], *, overrides: Sequence[str] = (), name: str = "copy") -> Callable[..., T]:
    """`copy(obj, **overrides)`: a new instance with every field of `obj` (a shallow copy, as `dataclasses.replace`
    makes, at the cost of one constructor call); the fields named in `overrides` are keyword arguments with the
    dataclass's defaults instead (`copy(job, duplicate=True)`)."""
    defaults = _defaults(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    params = "".join(f", {n}=_default_{n}" for n in overrides)
    body = ", ".join(f"{n}={n}" if n in overrides else f"{n}=o.{n}" for n in names)
    source = f"def {name}(o{', *' if overrides else ''}{params}):\n    return _cls({body})\n"
    scope: dict[str, Any] = {"_cls": cls, **{f"_default_{n}": v for n, v in defaults.items()}}
    exec(compile(source, f"<conveyor.codec {cls.__name__}.{name}>", "exec"), scope)
    fn: Callable[..., T] = scope[name]
    fn.__doc__ = f"Generated by conveyor.codec:\n\n{source}"
    return fn


def _convert(f: FieldSpec, expr: str, convert: Convert, *, may_be_none: bool) -> str:
    """The expression that turns the stored value `expr` into the field's value."""
    how = convert.get(f.kind)
    if how is None:
        return expr
    value = f"_c_{f.kind}[{expr}]" if isinstance(how, Mapping) else f"_c_{f.kind}({expr})"
    return f"(None if {expr} is None else {value})" if may_be_none else value


def _defaults(cls: type[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"conveyor.codec: {cls.__name__}.{f.name} has a default factory; give it a plain default")
    return out


def _compile(cls: type[T], arg: str, args: Mapping[str, str], convert: Convert, name: str) -> Callable[..., T]:
    defaults = _defaults(cls)
    rest = [f.name for f in dataclasses.fields(cls) if f.name not in args]  # type: ignore[arg-type]
    for field_name in rest:
        if field_name not in defaults:
            raise TypeError(f"conveyor.codec: {cls.__name__}.{field_name} is neither decoded nor has a default")
    params = "".join(f", {n}=_default_{n}" for n in rest)
    call = ", ".join([*(f"{n}={e}" for n, e in args.items()), *(f"{n}={n}" for n in rest)])
    source = f"def {name}({arg}{', *' if rest else ''}{params}):\n    return _cls({call})\n"
    scope: dict[str, Any] = {"_cls": cls}
    scope.update({f"_c_{kind}": fn for kind, fn in convert.items() if fn is not None})
    scope.update({f"_default_{n}": value for n, value in defaults.items()})
    exec(compile(source, f"<conveyor.codec {cls.__name__}.{name}>", "exec"), scope)
    fn: Callable[..., T] = scope[name]
    fn.__doc__ = f"Generated by conveyor.codec:\n\n{source}"
    return fn
