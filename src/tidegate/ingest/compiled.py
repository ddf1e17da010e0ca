"""A batch fast path for the HTTP door: the common event checked without the full validator.

At tens of thousands of events a second the per-event cost of `EventSchema.from_object`
(a `Change` built, unknown fields sorted, the event time read, a reason prepared for
each column) is most of the door's work, yet almost every event is the plain case:
a JSON object whose fields are all declared, each value already of its column's type.
`CompiledSchema.rows` checks a whole decoded batch for that case with a loop set up
once per source, and answers per event either the typed row (exactly the row
`EventSchema.row` would build) or None: "not sure, ask the full validator". Every
rejection, every coercion it does not do itself, and every unknown field therefore
goes through `ingest/validate.py`, so reasons and dead letters stay the same.

The batch may come from orjson (faster than the standard decoder, but it reads an
integer beyond 64 bits as a float, where the standard decoder keeps it exact). The
fast path only takes values both decoders read alike: strings, booleans, integers
(orjson keeps every integer it returns exact), and floats small enough that no
integer literal could have produced them (so the event orjson writes to the log reads
back as the one the producer sent). Anything else is left to the full validator, which
the intake runs on the standard decoder's reading of that event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tidegate.ingest.validate import EventSchema, Invalid, coercer, exact_type
from tidegate.type_families import type_family

#: how the fast path treats a column's value (anything it does not take: None, ask)
_BIGINT, _FLOAT, _STRING, _TIMESTAMP, _OTHER = range(5)
#: the BIGINT range (other integer widths check their own through the coercer)
_LOW, _HIGH = -(2**63), 2**63
#: an orjson float this small cannot have been an integer literal (those stay ints
#: up to 2**64), so a coercer sees what it would have seen from the standard decoder
_FLOAT_SAFE = float(2**63)
#: a float column takes an int as float(int); exact below 2**53
_EXACT_FLOAT_INT = 2**53


_KINDS = {int: _BIGINT, float: _FLOAT, str: _STRING}


def _kind(column_type: str) -> int:
    """The batch decoder's own reading of a column (`exact_type`), plus timestamps."""
    exact = exact_type(column_type)
    if exact is not None:
        return _KINDS[exact]
    return _TIMESTAMP if type_family(column_type) == "timestamp" else _OTHER


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

    def rows(self, events: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Per event, its typed row when the fast path is sure it is valid and has no
        unknown field; None when the full validator must decide."""
        row = self.row
        return [row(event) for event in events]

    def row(self, event: Any) -> dict[str, Any] | None:
        """One event's typed row, or None: the full validator decides."""
        if type(event) is not dict or not event.keys() <= self.names:
            return None
        row: dict[str, Any] = {}
        for name, kind, coerce, required in self._columns:
            value = event.get(name)
            if value is None:
                if required:
                    return None
                row[name] = None
                continue
            kind_of = type(value)
            if kind == _BIGINT:
                if kind_of is int and _LOW <= value < _HIGH:
                    row[name] = value
                    continue
            elif kind == _FLOAT:
                if kind_of is float:
                    if -_FLOAT_SAFE < value < _FLOAT_SAFE:  # finite, and read alike
                        row[name] = value
                        continue
                    return None
                if kind_of is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
                    row[name] = float(value)
                    continue
            elif kind == _STRING:
                if kind_of is str:
                    row[name] = value
                    continue
            elif kind == _TIMESTAMP and kind_of is str:
                try:
                    parsed = dt.datetime.fromisoformat(value)
                except ValueError:
                    return None
                row[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
                continue
            # the column's own coercer, on values both decoders read alike
            if kind_of is float and not -_FLOAT_SAFE < value < _FLOAT_SAFE:
                return None
            if kind_of not in (str, int, bool, float):
                return None
            try:
                row[name] = coerce(value)
            except Invalid:
                return None
        return row


def compiled(schema: EventSchema) -> CompiledSchema | None:
    """The fast path of `schema`, or None for a source it does not cover (Debezium)."""
    return CompiledSchema(schema) if schema.config.format == "json" else None
