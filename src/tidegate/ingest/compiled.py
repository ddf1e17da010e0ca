"""The one fast path for JSON events: a whole batch checked, and decoded, at once.

Both doors use it: the HTTP intake (`CompiledSchema.rows`, on bodies already decoded)
and the stream worker (`CompiledSchema.decode`, on a micro-batch of log values, into
Arrow columns). At tens of thousands of events a second the per-event cost of the full
validator (`EventSchema.from_object` / `parse`: a `Change` built, unknown fields
sorted, the event time read, a reason prepared for each column) is most of the work,
yet almost every event is the plain case: a JSON object whose fields are all declared,
each value already of its column's type. The check here runs column by column (a
column whose values are all plainly of its type passes with a few C-level passes) and
answers per event either its typed row (exactly the row `EventSchema.row` would build)
or "not sure, ask the full validator". Every rejection, every coercion it does not do
itself, and every unknown field therefore goes through `ingest/validate.py`, so
reasons and dead letters stay the same; the fast path never decides a rejection.

Events may come from orjson (faster than the standard decoder, but it reads an integer
beyond 64 bits as a float, where the standard decoder keeps it exact). The fast path
only takes values both decoders read alike: strings, booleans, integers (orjson keeps
every integer it returns exact), and floats small enough that no integer literal could
have produced them (so the event orjson writes to the log reads back as the one the
producer sent). Anything else is left to the full validator, which the HTTP intake runs
on the standard decoder's reading of that event.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tidegate.ingest.validate import EventSchema, Invalid, arrow_type, coercer, exact_type
from tidegate.type_families import type_family

#: how the fast path treats a column's value (anything it does not take: the full validator)
_BIGINT, _FLOAT, _STRING, _TIMESTAMP, _OTHER = range(5)
#: the BIGINT range (other integer widths check their own through the coercer)
_LOW, _HIGH = -(2**63), 2**63
#: an orjson float this small cannot have been an integer literal (those stay ints
#: up to 2**64), so a coercer sees what it would have seen from the standard decoder
_FLOAT_SAFE = float(2**63)
#: a float column takes an int as float(int); exact below 2**53
_EXACT_FLOAT_INT = 2**53
#: "not taken": the full validator decides
_NO: Any = object()
_NONE_TYPE = type(None)


_KINDS = {int: _BIGINT, float: _FLOAT, str: _STRING}


def _kind(column_type: str) -> int:
    """The column as the fast path reads it: `validate.exact_type`, plus timestamps."""
    exact = exact_type(column_type)
    if exact is not None:
        return _KINDS[exact]
    return _TIMESTAMP if type_family(column_type) == "timestamp" else _OTHER


def _value(kind: int, coerce: Callable[[Any], Any], value: Any) -> Any:
    """One non-null value as `EventSchema.row` types it, or `_NO`."""
    kind_of = type(value)
    if kind == _BIGINT:
        if kind_of is int and _LOW <= value < _HIGH:
            return value
    elif kind == _FLOAT:
        if kind_of is float:
            return value if -_FLOAT_SAFE < value < _FLOAT_SAFE else _NO  # finite, read alike
        if kind_of is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
            return float(value)
    elif kind == _STRING:
        if kind_of is str:
            return value
    elif kind == _TIMESTAMP and kind_of is str:
        return _timestamp(value)
    # the column's own coercer, on values both decoders read alike
    if kind_of is float and not -_FLOAT_SAFE < value < _FLOAT_SAFE:
        return _NO
    if kind_of not in (str, int, bool, float):
        return _NO
    try:
        return coerce(value)
    except Invalid:
        return _NO


def _timestamp(text: str) -> Any:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return _NO
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class Checked:
    """A batch checked (`CompiledSchema.check`): `columns` hold the typed values of the
    events at `taken` (positions in the batch, in order), one list per declared column;
    `rest` are the positions left to the full validator."""

    columns: list[list[Any]]
    taken: list[int]
    rest: list[int]


@dataclass
class DecodedBatch:
    """A micro-batch of log values decoded at once (`CompiledSchema.decode`): `table`
    holds the taken events in the source's Arrow types, in input order, `taken` their
    positions; `rest` the positions left to the per-event `EventSchema.parse`
    (malformed, oversize, null, undeclared fields, anything `check` does not take)."""

    table: Any = None
    taken: list[int] = field(default_factory=list)
    rest: list[int] = field(default_factory=list)


class CompiledSchema:
    """One stream source's fast check, set up once (JSON format only)."""

    def __init__(self, schema: EventSchema) -> None:
        config = schema.config
        if config.format != "json":
            raise ValueError(f"source {schema.name!r}: the fast path takes JSON events only")
        self.schema = schema
        self.names = schema.names
        required = set(schema.required)
        self._columns = tuple(
            (name, _kind(spec.type), coercer(spec.type), name in required)
            for name, spec in config.columns.items()
        )
        self._order = tuple(config.columns)
        self._arrow: Any = None  # the Arrow schema, built at the first `decode`

    # ---------------------------------------------------------------- the check

    def check(self, events: Sequence[Any]) -> Checked:
        """The whole batch, column by column."""
        names = self.names
        taken: list[int] = []
        objects: list[dict[str, Any]] = []
        rest: list[int] = []
        for index, event in enumerate(events):
            if type(event) is dict and event.keys() <= names:
                objects.append(event)
                taken.append(index)
            else:
                rest.append(index)
        bad: set[int] = set()  # positions in `objects` left to the full validator
        columns: list[list[Any]] = []
        for name, kind, coerce, required in self._columns:
            column = [event.get(name) for event in objects]
            columns.append(column)
            kinds = set(map(type, column))
            if _NONE_TYPE in kinds:
                kinds.discard(_NONE_TYPE)
                if required:
                    bad.update(i for i, v in enumerate(column) if v is None)
                present = [v for v in column if v is not None]
            else:
                present = column
            if not kinds or _plain(kind, kinds, present):
                continue
            if kind == _TIMESTAMP and kinds == {str}:
                for i, item in enumerate(column):
                    if item is not None:
                        parsed = column[i] = _timestamp(item)
                        if parsed is _NO:
                            bad.add(i)
                continue
            for i, item in enumerate(column):
                if item is not None:
                    typed = column[i] = _value(kind, coerce, item)
                    if typed is _NO:
                        bad.add(i)
        if bad:
            keep = [i for i in range(len(objects)) if i not in bad]
            rest = sorted(rest + [taken[i] for i in bad])
            taken = [taken[i] for i in keep]
            columns = [[column[i] for i in keep] for column in columns]
        return Checked(columns, taken, rest)

    @property
    def order(self) -> tuple[str, ...]:
        """The declared columns, in the order `values` gives each event's values."""
        return self._order

    def values(self, events: Sequence[Any]) -> list[tuple[Any, ...] | None]:
        """Per event, its typed values in `order` when the fast path is sure it is valid
        and has no unknown field; None when the full validator must decide. The HTTP
        door reads a key from them and logs the event itself: no dict per event."""
        checked = self.check(events)
        out: list[tuple[Any, ...] | None] = [None] * len(events)
        for index, values in zip(checked.taken, zip(*checked.columns, strict=True), strict=True):
            out[index] = values
        return out

    def rows(self, events: Sequence[Any]) -> list[dict[str, Any] | None]:
        """`values` as rows: each event's typed row (exactly `EventSchema.row`'s), or None."""
        order = self._order
        return [
            None if values is None else dict(zip(order, values, strict=True))
            for values in self.values(events)
        ]

    def row(self, event: Any) -> dict[str, Any] | None:
        """One event's typed row, or None: the full validator decides."""
        return self.rows([event])[0]

    # ---------------------------------------------------------------- log values

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """A micro-batch of `json` log values, decoded and checked into Arrow columns at
        once; `EventSchema.parse` reads values with orjson too, so both see one event."""
        import pyarrow as pa

        limit = self.schema.config.max_event_bytes
        loads = orjson.loads
        rest: list[int] = []
        where: list[int] = []
        events: list[Any] = []
        for index, value in enumerate(values):
            if value is None or len(value) > limit:
                rest.append(index)
                continue
            try:
                events.append(loads(value))
            except orjson.JSONDecodeError:
                rest.append(index)
                continue
            where.append(index)
        checked = self.check(events)
        taken = [where[i] for i in checked.taken]
        rest = sorted(rest + [where[i] for i in checked.rest])
        if self._arrow is None:
            columns = self.schema.config.columns
            self._arrow = pa.schema([(n, arrow_type(spec.type)) for n, spec in columns.items()])
        schema = self._arrow
        try:
            table = pa.Table.from_arrays(
                [
                    pa.array(column, type=t)
                    for column, t in zip(checked.columns, schema.types, strict=True)
                ],
                schema=schema,
            )
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # values the source's Arrow types cannot hold (a column of an unusual SQL
            # type): every event takes the per-event path
            return DecodedBatch(rest=list(range(len(values))))
        return DecodedBatch(table, taken, rest)


def _plain(kind: int, kinds: set[type], present: list[Any]) -> bool:
    """Whether a column's non-null values all pass as they are (no per-value work)."""
    if kind == _STRING:
        return kinds == {str}
    if kind == _BIGINT:
        return kinds == {int} and min(present) >= _LOW and max(present) < _HIGH
    if kind == _FLOAT:
        # min and max bound every value unless one is NaN, which makes the sum NaN
        return (
            kinds == {float}
            and min(present) > -_FLOAT_SAFE
            and max(present) < _FLOAT_SAFE
            and math.isfinite(sum(present))
        )
    return False


def compiled(schema: EventSchema) -> CompiledSchema | None:
    """The fast path of `schema`, or None for a source it does not cover (Debezium)."""
    return CompiledSchema(schema) if schema.config.format == "json" else None
