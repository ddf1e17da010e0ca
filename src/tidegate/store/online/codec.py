"""Rows as JSON text in the online store, and back to typed values on read.

Dates and timestamps travel as ISO text; the contract's column types turn them back
into `date`/`datetime` so treatments see the same values as in DuckDB.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import orjson

from tidegate.type_families import type_family


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot store {type(value).__name__} in the online store")


# The fallback for what orjson refuses (integers beyond 64 bits, e.g. HUGEINT; times of
# day with a zone): one encoder for every row, since json.dumps(default=...) would build
# a new one per call.
_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"))


def encode_row(row: dict[str, Any]) -> str:
    """The row as compact JSON. orjson (C) first: the stream worker encodes every changed
    row once per micro-batch, and the standard encoder cost about a seventh of its time.
    Dates and timestamps come out as `isoformat()` gives them; a NaN or infinite float
    becomes null (the standard encoder wrote `NaN`, which no strict JSON reader, orjson
    included, accepts)."""
    try:
        return orjson.dumps(row, default=_default).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(row)


def encode_value(value: Any) -> str:
    """One value as JSON text, encoded as a row's column would be."""
    try:
        return orjson.dumps(value, default=_default).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(value)


def decode_row(text: str | bytes, types: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(text)
    for name, column_type in types.items():
        value = row.get(name)
        if not isinstance(value, str):
            continue
        family = type_family(column_type)
        if family == "date":
            row[name] = dt.date.fromisoformat(value)
        elif family == "timestamp":
            row[name] = dt.datetime.fromisoformat(value)
    return row
