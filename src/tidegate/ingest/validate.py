"""Check one event against its stream source's declared columns, and say why not.

Every way in (HTTP, Kafka topics, files, CDC) funnels through `parse_event`, which
returns either a `Change` (typed values, ready for the store) or a reason a person can
act on: malformed JSON, a wrong type (naming the column and the value), a missing
key or required column, an event over `max_event_bytes`, a Debezium event for a table
this source does not take. Fields the schema does not declare follow the source's
`unknown_fields` policy: `reject` makes the event invalid (naming the fields); `drop`
(the default) and `keep` accept it and name them in `Change.unknown`, so the intake
counts them and, for `drop`, logs the event without them (never silently: the ingest
answer, /metrics and `tidegate status` report the counts).

Coercions are the ones a JSON or CSV producer needs and nothing lossy: integers from
integral numbers or digit strings, floats from numbers or numeric strings, booleans
from true/false/1/0, timestamps from ISO 8601 or epoch numbers (seconds, or
milliseconds/microseconds when the number is that large), dates from ISO dates.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tidegate.project.models import StreamSource
from tidegate.type_families import type_family

Op = Literal["append", "upsert", "delete", "truncate", "tombstone"]
#: what Debezium writes for a column it did not capture (an unchanged TOASTed value)
UNAVAILABLE = "__debezium_unavailable_value"
#: fields of a Kafka record written out as JSON (kcat -J, Connect's file sink), not an event
_RECORD_FIELDS = {"key", "value", "topic", "partition", "offset", "headers", "ts", "timestamp"}
_TRUE = {"true", "t", "yes", "1"}
_FALSE = {"false", "f", "no", "0"}
_INT_RANGES = {
    "TINYINT": 2**7,
    "SMALLINT": 2**15,
    "INTEGER": 2**31,
    "INT": 2**31,
    "BIGINT": 2**63,
}


class Invalid(ValueError):
    """An event that cannot be accepted; the message is the reason stored with it."""


@dataclass(frozen=True)
class Change:
    """One validated event: append it (json), or upsert/delete the row by key (CDC).

    CDC also has `truncate` (every row of the table goes) and `tombstone` (Debezium's
    null-valued record after a delete, for log compaction: nothing left to do)."""

    source: str
    op: Op
    row: dict[str, Any]
    key: Any = None  # the source's key value (None for an append without a key)
    ts: float | None = None  # when it happened at the source, if the source says
    #: columns Debezium did not capture (placeholder `UNAVAILABLE`): keep the stored value
    unchanged: tuple[str, ...] = ()
    #: fields of the event the source does not declare (policy `drop` or `keep`)
    unknown: tuple[str, ...] = ()


Coercer = Callable[[Any], Any]


def _integer(column_type: str) -> Coercer:
    bound = _INT_RANGES.get(column_type.upper().split("(")[0].strip())

    def coerce(value: Any) -> Any:
        if isinstance(value, bool):
            raise Invalid("is a boolean, not an integer")
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            result = int(value.strip())
        else:
            raise Invalid(f"{_show(value)} is not an integer")
        if bound is not None and not -bound <= result < bound:
            raise Invalid(f"{result} is out of range for {column_type}")
        return result

    return coerce


def _float(value: Any) -> Any:
    if isinstance(value, bool):
        raise Invalid("is a boolean, not a number")
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:  # an integer beyond any double
            raise Invalid(f"{_show(value)} is not a finite number") from None
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise Invalid(f"{_show(value)} is not a number") from None
    else:
        raise Invalid(f"{_show(value)} is not a number")
    if not math.isfinite(result):
        raise Invalid(f"{_show(value)} is not a finite number")
    return result


def _string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Invalid(f"{_show(value)} is not a string")


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Invalid(f"{_show(value)} is not a boolean")


def _timestamp(value: Any) -> Any:
    if type(value) is str:  # the common case first: ISO 8601 text from JSON
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass  # surrounding blanks, or not a timestamp: the checked path below says
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if abs(seconds) > 1e14:
            seconds /= 1e6
        elif abs(seconds) > 1e11:
            seconds /= 1e3
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise Invalid(f"{_show(value)} is not a timestamp") from None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"{_show(value)} is not an ISO 8601 timestamp") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise Invalid(f"{_show(value)} is not a timestamp")


def _date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):  # Debezium: days since epoch
        try:
            return dt.date(1970, 1, 1) + dt.timedelta(days=value)
        except OverflowError:  # a reason, not a crash of the worker on every retry
            raise Invalid(f"{_show(value)} is not a date in range") from None
    raise Invalid(f"{_show(value)} is not an ISO date")


def _any(value: Any) -> Any:
    return value


def coercer(column_type: str) -> Coercer:
    family = type_family(column_type)
    if family == "integer":
        return _integer(column_type)
    if family == "float":
        return _float
    if family == "string":
        return _string
    if family == "timestamp":
        return _timestamp
    if family == "date":
        return _date
    if column_type.upper().startswith("BOOL"):
        return _boolean
    if column_type.upper() == "JSON":
        return lambda value: value if isinstance(value, str) else json.dumps(value)
    return _any


#: `exact_type` of a BIGINT column (other integer widths take the checked path)
_BIGINT = int


def exact_type(column_type: str) -> type | None:
    """The Python type a JSON value of this column already has when it needs no coercion."""
    family = type_family(column_type)
    if family == "integer" and column_type.upper().split("(")[0].strip() in (
        "BIGINT",
        "INT8",
        "LONG",
    ):
        return _BIGINT
    if family == "float":
        return float
    if family == "string":
        return str
    return None


def arrow_type(column_type: str) -> Any:
    """The Arrow type a column's values travel in (raw tables cast them to the SQL type)."""
    import pyarrow as pa

    family = type_family(column_type)
    if family == "integer":
        return pa.int64()
    if family == "float":
        return pa.float64()
    if family == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if family == "date":
        return pa.date32()
    if column_type.upper().startswith("BOOL"):
        return pa.bool_()
    return pa.string()


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class EventSchema:
    """The compiled checks of one stream source."""

    def __init__(self, config: StreamSource) -> None:
        self.config = config
        self.name = config.name
        self.columns = [(name, coercer(spec.type)) for name, spec in config.columns.items()]
        # Values already of the column's own type pass without a coercer call: the common
        # case, and most of the per-event cost at tens of thousands of events a second.
        self._exact = [exact_type(spec.type) for spec in config.columns.values()]
        self.required = [
            name
            for name, spec in config.columns.items()
            if not spec.nullable or name in (config.key, config.event_id)
        ]
        self.names = frozenset(config.columns)

    def unknown_fields(self, data: Any) -> tuple[str, ...]:
        """The fields of `data` the source does not declare; Invalid under `reject`."""
        if not isinstance(data, dict) or data.keys() <= self.names:
            return ()
        extra = tuple(sorted(str(k) for k in data if k not in self.names))
        if self.config.unknown_fields == "reject":
            shown = ", ".join(repr(f) for f in extra[:10])
            more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
            raise Invalid(
                f"unknown field(s) {shown}{more}: source {self.name!r} has "
                "unknown_fields: reject (declare them as columns, or set unknown_fields: "
                "drop or keep)"
            )
        return extra

    # ---------------------------------------------------------------- rows

    def row(
        self, data: Any, *, partial: bool = False, unchanged: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Typed row from a JSON object; `partial` allows absent columns (a delete's key),
        `unchanged` columns are absent on purpose (their stored value stays)."""
        if not isinstance(data, dict):
            raise Invalid(f"an event must be a JSON object, not {_json_kind(data)}")
        row: dict[str, Any] = {}
        for (name, coerce), exact in zip(self.columns, self._exact, strict=True):
            value = data.get(name)
            if value is None:
                row[name] = None
                continue
            kind = type(value)
            if kind is exact and (
                kind is str
                or (kind is int and -(2**63) <= value < 2**63 and exact is _BIGINT)
                or (kind is float and math.isfinite(value))
            ):
                row[name] = value
                continue
            try:
                row[name] = coerce(value)
            except Invalid as err:
                raise Invalid(f"column {name!r}: {err}") from None
        if not partial:
            missing = [
                name for name in self.required if row.get(name) is None and name not in unchanged
            ]
            if missing:
                role = {self.config.event_id: "event id", self.config.key: "key"}
                described = [
                    f"{role[m]} column {m!r}" if m in role else f"required column {m!r}"
                    for m in missing
                ]
                raise Invalid("missing " + ", ".join(described))
        return row

    def event_ts(self, row: dict[str, Any]) -> float | None:
        column = self.config.event_time
        value = row.get(column) if column else None
        return value.timestamp() if isinstance(value, dt.datetime) else None

    # ---------------------------------------------------------------- formats

    def parse(self, value: bytes | None, key: bytes | None = None) -> Change:
        """Parse and check one raw event (a Kafka-style value, and key for tombstones)."""
        if value is not None and len(value) > self.config.max_event_bytes:
            raise Invalid(
                f"event is {len(value):,} bytes, more than max_event_bytes "
                f"({self.config.max_event_bytes:,})"
            )
        if self.config.format == "debezium":
            return self._debezium(value, key)
        if value is None:
            raise Invalid("empty event (no value)")
        return self.from_object(_loads(value))

    def from_object(self, data: Any) -> Change:
        """A JSON-format event already parsed (HTTP batches, files)."""
        if self.config.format == "debezium":
            return self._debezium_payload(data)
        unknown = self.unknown_fields(data)
        row = self.row(data)
        key = row.get(self.config.key) if self.config.key else None
        return Change(self.name, "append", row, key, self.event_ts(row), unknown=unknown)

    def _debezium(self, value: bytes | None, key: bytes | None) -> Change:
        if value is None:  # a tombstone: the key alone says which row is gone
            return self._tombstone(_loads(key) if key is not None else None)
        return self._debezium_payload(_loads(value))

    def _tombstone(self, key: Any) -> Change:
        """Debezium follows each delete with a null-valued record of the row's key, for log
        compaction. With a key it is applied as a delete (idempotent after the delete);
        without one there is nothing to do, and it is accepted and ignored."""
        key = _unwrap(key)
        if key is None:
            return Change(self.name, "tombstone", {})
        if not isinstance(key, dict):  # a bare key value, as some converters write it
            key = {self.config.key or "": key}
        return self._delete(self.row(key, partial=True))

    def _debezium_payload(self, data: Any) -> Change:
        if isinstance(data, dict) and "value" in data and data.keys() <= _RECORD_FIELDS:
            # a Kafka record written out as JSON: {"key": ..., "value": ...}
            if _unwrap(data["value"]) is None:
                return self._tombstone(data.get("key"))
            data = data["value"]
        payload = _unwrap(data)
        if payload is None:  # a tombstone posted over HTTP or written to a file
            return self._tombstone(None)
        if not isinstance(payload, dict) or "op" not in payload:
            raise Invalid("not a Debezium change event (no `op`)")
        source = payload.get("source") or {}
        table = source.get("table") if isinstance(source, dict) else None
        if self.config.table is not None and table != self.config.table:
            raise Invalid(
                f"Debezium event for unknown table {table!r} "
                f"(source {self.name!r} takes {self.config.table!r})"
            )
        ts_ms = source.get("ts_ms") if isinstance(source, dict) else None
        if ts_ms is None:
            ts_ms = payload.get("ts_ms")
        ts = float(ts_ms) / 1000.0 if isinstance(ts_ms, int | float) else None
        op = payload["op"]
        if op in ("c", "u", "r"):
            after = payload.get("after")
            unchanged: tuple[str, ...] = ()
            if isinstance(after, dict):
                unchanged = tuple(n for n, v in after.items() if v == UNAVAILABLE)
                if unchanged:
                    after = {n: v for n, v in after.items() if v != UNAVAILABLE}
            key = self.config.key or ""
            if key in unchanged:
                raise Invalid(f"Debezium event without its key column {key!r}")
            unknown = self.unknown_fields(after)
            row = self.row(after, unchanged=unchanged)
            return Change(self.name, "upsert", row, row.get(key), ts, unchanged, unknown)
        if op == "d":
            before = payload.get("before")
            if not isinstance(before, dict):
                raise Invalid("Debezium delete without `before` (the deleted row's key)")
            return self._delete(self.row(before, partial=True), ts)
        if op == "t":
            return Change(self.name, "truncate", {}, None, ts)
        if op == "m":  # a logical-decoding message: carries no row of this table
            return Change(self.name, "tombstone", {}, None, ts)
        raise Invalid(f"unknown Debezium op {op!r} (expected c, u, d, r, t or m)")

    def _delete(self, row: dict[str, Any], ts: float | None = None) -> Change:
        key = row.get(self.config.key or "")
        if key is None:
            raise Invalid(f"missing key column {self.config.key!r}")
        return Change(self.name, "delete", row, key, ts)


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as err:  # also invalid UTF-8
        raise Invalid(f"malformed JSON: {err}") from None


def _unwrap(data: Any) -> Any:
    """Debezium with the JSON converter's schemas on wraps everything in `payload`."""
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        return data["payload"]
    return data


def _json_kind(data: Any) -> str:
    if data is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(data), "a number")
