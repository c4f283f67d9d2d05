"""Listing jobs: filters, sort orders, keyset cursors, id fragments and JSON paths, pages."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from conveyor.errors import ValidationError
from conveyor.model.base import BAD_TEXT_RE, EPOCH, JSON, NAME_RE
from conveyor.model.job import Job, JobStatus
from conveyor.model.text import dumps_compact


class JobSort(StrEnum):
    """The orders a job list can take (`Store.list_jobs(sort=)`). Ties are broken by id in the same direction, so
    every order is total and a keyset cursor (`JobKey`) names one place in it. `finished_at` puts unfinished jobs
    (no finish time) last in both directions."""

    CREATED_DESC = "-created"
    CREATED = "created"
    RUN_AT = "run_at"
    RUN_AT_DESC = "-run_at"
    FINISHED_AT = "finished_at"
    FINISHED_AT_DESC = "-finished_at"
    ATTEMPTS = "attempts"
    ATTEMPTS_DESC = "-attempts"

    @property
    def field(self) -> str:
        return self.value.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


SortValue = datetime | int | None


def sort_value(job: Job, sort: JobSort) -> SortValue:
    """The job's value of the sort's field (None only for `finished_at` of an unfinished job)."""
    value: SortValue = getattr(job, sort.field)
    return value


@dataclass(frozen=True, slots=True)
class JobKey:
    """A keyset position in a job list: the order, and the sort value and id of the last job listed before it.

    Why keysets and not offsets: between two pages jobs are consumed and added; an offset then points at another
    job than the one the page ended at (GS2 Run consumed job 1, so "offset 2" skipped job 3). A key names the place
    itself, so the next page starts right after the last job shown, whatever moved meanwhile, and an index seeks
    to it: page 1000 costs what page 1 costs. Clients see it only as an opaque cursor (`encode_cursor`)."""

    sort: JobSort
    value: SortValue
    id: str

    @classmethod
    def of(cls, job: Job, sort: JobSort) -> JobKey:
        return cls(sort, sort_value(job, sort), job.id)

    def precedes(self, job: Job) -> bool:
        """Whether `job` comes after this key in its order (so it belongs on the page that starts here)."""
        return sort_key_before((self.value, self.id), (sort_value(job, self.sort), job.id), self.sort.descending)


def sort_key_before(a: tuple[SortValue, str], b: tuple[SortValue, str], descending: bool) -> bool:
    """Whether (value, id) `a` is listed before `b`: by value (None last either way), then by id, both in the
    sort's direction. The one definition of the order the stores' queries implement."""
    (va, ia), (vb, ib) = a, b
    if va != vb:
        if va is None:
            return False
        if vb is None:
            return True
        return bool(va > vb) if descending else bool(va < vb)  # type: ignore[operator]
    return ia > ib if descending else ia < ib


def job_sort_key(job: Job, sort: JobSort) -> tuple[int, Any, str]:
    """A `sorted(key=...)` for `sort` in ascending form (reverse=True gives the descending order, except the
    None-last rule, which this key keeps in both directions by its first element)."""
    value = sort_value(job, sort)
    if value is None:
        return (0 if sort.descending else 1, 0, job.id)
    return (1 if sort.descending else 0, value, job.id)


CURSOR_VERSION = 1
_CURSOR_KINDS = {"created": "t", "run_at": "t", "finished_at": "t", "attempts": "i"}


def encode_cursor(key: JobKey) -> str:
    """The opaque text a client passes back to get the next page: base64url of the keyset (times in integer
    microseconds, as every store keeps them). Opaque so clients never compute one (or an offset) themselves."""
    value: int | None
    value = to_microseconds(key.value) if isinstance(key.value, datetime) else key.value
    raw = json.dumps([CURSOR_VERSION, key.sort.value, value, key.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, sort: JobSort = None, *, field: str = "cursor") -> JobKey:  # type: ignore[assignment]
    """Parse and validate a cursor from `encode_cursor`. Anything else (tampered, truncated, from another sort
    order than `sort` when given) raises ValidationError naming `field`, so the API answers 400, never a 500 or a
    silently wrong page."""
    bad = ValidationError(
        f"{field} is not a cursor this server gave out: pass back the next-page cursor of the previous answer "
        "unchanged, or leave it out for the first page",
        field=field,
    )
    if not isinstance(text, str) or not 1 <= len(text) <= 2048:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        version, order, value, job_id = json.loads(raw)
        parsed = JobSort(order)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if version != CURSOR_VERSION or not isinstance(job_id, str) or not 1 <= len(job_id) <= 1024:
        raise bad
    if BAD_TEXT_RE.search(job_id):
        raise bad
    kind = _CURSOR_KINDS[parsed.field]
    if value is None:
        if parsed.field != "finished_at":
            raise bad
        return JobKey(parsed, None, job_id)
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**62) <= value <= 2**62:
        raise bad
    if sort is not None and parsed is not JobSort(sort):
        raise ValidationError(
            f"{field} was made for sort={parsed.value}, not sort={JobSort(sort).value}: a cursor continues the "
            "order it came from; start again without it to change the order",
            field=field,
        )
    if kind == "t":
        try:
            return JobKey(parsed, from_microseconds(value), job_id)
        except (OverflowError, ValueError, OSError):
            raise bad from None
    return JobKey(parsed, value, job_id)


def encode_name_cursor(name: str) -> str:
    """The cursor of a list by name (namespaces): the last name listed, opaque like `encode_cursor`."""
    raw = json.dumps([CURSOR_VERSION, "name", name], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_name_cursor(text: str, *, field: str = "cursor") -> str:
    """The name `encode_name_cursor` put in; anything else raises ValidationError naming `field`."""
    bad = ValidationError(
        f"{field} is not a cursor this server gave out: pass back the previous answer's next-page cursor unchanged",
        field=field,
    )
    if not isinstance(text, str) or not 1 <= len(text) <= 2048:
        raise bad
    try:
        version, kind, name = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if version != CURSOR_VERSION or kind != "name" or not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise bad
    return name


def to_microseconds(t: datetime) -> int:
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_microseconds(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


_HEX_RE = re.compile(r"[0-9a-f]+")


def id_fragment(text: str, *, field: str = "id") -> str:
    """A search by id: a whole id (returned as given), or 4+ hexadecimal digits (dashes ignored, any case) that
    begin or end a job's id — returned lower-case without dashes. The UI shows ids by their last characters."""
    compact = text.replace("-", "").lower()
    if len(compact) >= 4 and len(compact) <= 32 and _HEX_RE.fullmatch(compact):
        return compact
    raise ValidationError(
        f"{field} must be a job id, or at least 4 hexadecimal characters that begin or end one, got {text!r}",
        field=field,
    )


def dashed_prefix(fragment: str) -> str:
    """The hex `fragment` as the beginning of a dashed UUID (8-4-4-4-12), for an index range on the id."""
    return _dashed(fragment, 0)


def dashed_suffix(fragment: str) -> str:
    """The hex `fragment` as the end of a dashed UUID."""
    return _dashed(fragment, 32 - len(fragment))


def _dashed(fragment: str, start: int) -> str:
    out = []
    for i, ch in enumerate(fragment, start):
        if i in (8, 12, 16, 20) and i != start:
            out.append("-")
        out.append(ch)
    return "".join(out)


def prefix_upper_bound(prefix: str) -> str:
    """The smallest text above every text that starts with `prefix` (its last character + 1): `id >= prefix AND
    id < bound` is an index range."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def parse_json_path(path: str, *, field: str = "path") -> list[str | int]:
    """`$.user.id`, `user.id`, `items[0].sku` → the keys and indexes to walk. Refuses anything else with a message
    that shows the accepted form."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    text = text.lstrip(".")
    steps: list[str | int] = []
    for match in _PATH_STEP_RE.finditer(text):
        name, index = match.group(1), match.group(2)
        steps.append(int(index) if index is not None else name)
    rebuilt = "".join(m.group(0) for m in _PATH_STEP_RE.finditer(text))
    if not steps or rebuilt != text or len(steps) > 32:
        raise ValidationError(
            f"{field} must be a JSON path of dotted keys and [n] indexes such as $.user.id or items[0].sku, "
            f"got {path!r}",
            field=field,
        )
    return steps


_PATH_STEP_RE = re.compile(r"\.?([A-Za-z0-9_\-]+)|\[(\d{1,6})\]")


def path_values(value: str) -> list[JSON]:
    """What a path search's `value` matches: the JSON it parses as (42, true, "x", {...}) and the text itself."""
    found: list[JSON] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return found
    if parsed != value:
        found.insert(0, parsed)
    return found


def walk_json_path(doc: JSON, steps: Sequence[str | int]) -> tuple[bool, JSON]:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(doc, list) or step >= len(doc):
                return False, None
            doc = doc[step]
        else:
            if not isinstance(doc, dict) or step not in doc:
                return False, None
            doc = doc[step]
    return True, doc


def json_equal(a: JSON, b: JSON) -> bool:
    """JSON equality (True is not 1, 1 is 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Filter for listing jobs. None means "any".

    Beyond the exact fields: `scheduled` (pending, due later, never tried), `retrying` (pending after at least one
    try), `id_fragment` (see `id_fragment()`: a whole id, or hex digits that begin or end it), `q` (text in the
    JSON payload, case-insensitive), `path` + `value` (the payload's value at a JSON path equals `value` as JSON or
    as text), `queue_contains` / `task_contains` (case-insensitive substrings)."""

    namespace: str | None = None
    queue: str | None = None
    task: str | None = None
    status: JobStatus | None = None
    user_id: str | None = None
    ids: Sequence[str] | None = None
    scheduled: bool | None = None
    retrying: bool | None = None
    id_fragment: str | None = None
    q: str | None = None
    path: Sequence[str | int] | None = None
    value: str | None = None
    queue_contains: str | None = None
    task_contains: str | None = None

    @property
    def searches(self) -> bool:
        """Whether a search filter (beyond the exact fields) is set: stores without indexes for them scan."""
        return any(
            v is not None
            for v in (
                self.scheduled,
                self.retrying,
                self.id_fragment,
                self.q,
                self.path,
                self.queue_contains,
                self.task_contains,
            )
        )

    def matches(self, job: Job, now: datetime) -> bool:
        """The filter in Python: the memory store's, and what every store's query must agree with."""
        if (
            (self.namespace is not None and job.namespace != self.namespace)
            or (self.queue is not None and job.queue != self.queue)
            or (self.task is not None and job.task != self.task)
            or (self.status is not None and job.status != self.status)
            or (self.user_id is not None and job.user_id != self.user_id)
            or (self.ids is not None and job.id not in self.ids)
        ):
            return False
        if self.scheduled is not None:
            is_scheduled = job.status is JobStatus.PENDING and job.run_at > now and job.attempts == 0
            if is_scheduled != self.scheduled:
                return False
        if self.retrying is not None and (job.status is JobStatus.PENDING and job.attempts > 0) != self.retrying:
            return False
        if self.id_fragment is not None and not id_matches(job.id, self.id_fragment):
            return False
        if self.queue_contains is not None and self.queue_contains.lower() not in job.queue.lower():
            return False
        if self.task_contains is not None and self.task_contains.lower() not in job.task.lower():
            return False
        if self.q is not None:
            text = job.payload_json if job.payload_json is not None else dumps_compact(job.payload)
            if self.q.lower() not in text.lower():
                return False
        if self.path is not None:
            found, at = walk_json_path(job.payload, self.path)
            if not found or not any(json_equal(at, v) for v in path_values(self.value or "")):
                return False
        return True


def id_matches(job_id: str, fragment: str) -> bool:
    compact = job_id.replace("-", "").lower()
    return compact.startswith(fragment) or compact.endswith(fragment)


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list. `next` is the key to pass as `after` for the following page (None on the last page)."""

    items: Sequence[T]
    total: int
    limit: int
    offset: int
    next: JobKey | None = None


# ---- cron schedules kept in the store (issue 13 item 5) -------------------------------------------------------
