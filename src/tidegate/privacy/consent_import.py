"""A consent management platform's export, read line by line: CSV (with a header) or JSON
lines, one choice per line, each validated on its own so one bad line does not stop the
rest. Nothing here writes: `requests/consent_batch.py` loads what this reads.

A line has `subject`, `purpose`, `action` (`grant` | `revoke` | `object`) and
`occurred_at` (unix time or ISO 8601: an export states when each choice was made, and a
re-run must mean the same moment), and optionally `source` (default `import`),
`evidence`, `expires_at` and `id`.

Idempotency: a line's key is its `id` when given (kept in the entry's evidence as
`[import ID]`), else (source, subject, purpose, action, occurred_at); a line whose key
the ledger already holds is a duplicate, so running an import twice records it once.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidegate.errors import BadRequestError
from tidegate.meta.base import ConsentRow
from tidegate.privacy.consent import DEFAULT_CLOCK_SKEW, ConsentEvent, check_not_future
from tidegate.project.models import PurposeConfig

Format = Literal["csv", "jsonl"]
FIELDS = ("id", "subject", "purpose", "action", "occurred_at", "source", "evidence", "expires_at")
TAG = "[import "


class ImportLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    subject: Annotated[str, Field(min_length=1, max_length=256)]
    purpose: str = Field(max_length=100)
    action: Literal["grant", "revoke", "object"]
    occurred_at: float | str
    source: str = Field(default="import", min_length=1, max_length=100)
    evidence: str = Field(default="", max_length=2000)
    expires_at: float | str | None = None


@dataclass(frozen=True)
class ImportedChoice:
    line: int
    event: ConsentEvent
    id: str | None

    def key(self) -> tuple[Any, ...]:
        """What makes two lines the same choice (see the module docstring)."""
        if self.id is not None:
            return ("id", self.id)
        e = self.event
        return ("choice", e.source, e.subject, e.purpose, e.action, e.occurred_at)


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str


def row_keys(row: ConsentRow) -> list[tuple[Any, ...]]:
    """The keys a ledger entry already stands for (its id tag, and its choice)."""
    keys: list[tuple[Any, ...]] = [
        ("choice", row.source, row.subject, row.purpose, row.action, row.occurred_at)
    ]
    if row.evidence.endswith("]") and TAG in row.evidence:
        keys.append(("id", row.evidence[row.evidence.rindex(TAG) + len(TAG) : -1]))
    return keys


def detect_format(name: str, head: bytes) -> Format:
    """`.csv` / `.jsonl` / `.ndjson` by name, else by the first non-blank character."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if head.lstrip()[:1] == b"{" else "csv"


def raw_lines(data: Iterable[str], fmt: Format) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, fields) per record, or (line number, why it is unreadable)."""
    if fmt == "csv":
        reader = csv.DictReader(data)
        missing = {"subject", "purpose", "action", "occurred_at"} - set(reader.fieldnames or [])
        if missing:
            raise BadRequestError(
                f"the CSV header lacks {', '.join(sorted(missing))} (columns: {', '.join(FIELDS)})",
                field="header",
            )
        for record in reader:
            if None in record:
                yield reader.line_num, "more values than header columns"
                continue
            yield reader.line_num, {k: v for k, v in record.items() if v not in ("", None)}
        return
    for number, text in enumerate(data, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            yield number, f"malformed JSON: {err.msg}"
            continue
        yield (number, value) if isinstance(value, dict) else (number, "not a JSON object")


def _moment(value: float | str, field: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    import datetime as dt

    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a unix time or ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def read_choices(
    data: Iterable[str],
    fmt: Format,
    purposes: dict[str, PurposeConfig],
    *,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
    now: float | None = None,
) -> Iterator[ImportedChoice | LineError]:
    """Each line as a choice, or as the error that keeps it out (with its line number)."""
    received = time.time() if now is None else now
    for number, fields in raw_lines(data, fmt):
        if isinstance(fields, str):
            yield LineError(number, fields)
            continue
        try:
            line = ImportLine.model_validate(fields)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            yield LineError(number, f"{where}: {first['msg']}" if where else str(first["msg"]))
            continue
        if line.purpose not in purposes:
            yield LineError(number, f"unknown purpose {line.purpose!r}")
            continue
        try:
            at = _moment(line.occurred_at, "occurred_at")
            check_not_future(at, received, clock_skew)
            expires = None if line.expires_at is None else _moment(line.expires_at, "expires_at")
        except (ValueError, BadRequestError) as err:
            yield LineError(number, getattr(err, "message", None) or str(err))
            continue
        evidence = line.evidence
        if line.id is not None:
            tag = f"{TAG}{line.id}]"
            evidence = f"{evidence} {tag}" if evidence else tag
        event = ConsentEvent(
            line.subject, line.purpose, line.action, at, line.source, evidence, expires
        )
        yield ImportedChoice(number, event, line.id)


def text_lines(payload: bytes) -> Iterator[str]:
    """A request body's lines (UTF-8, a BOM tolerated), for `read_choices`."""
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequestError("the body is not UTF-8 text", field="body") from None
    return iter(io.StringIO(text, newline=""))
