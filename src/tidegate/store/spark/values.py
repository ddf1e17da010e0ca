"""Rows from Spark as DuckDB hands them out, so both stores publish the same values.

PySpark turns a TIMESTAMP (an instant) into a naive datetime in the *driver's local*
time zone; DuckDB gives an aware datetime in UTC for TIMESTAMPTZ. The converter makes
the former the latter. Everything else (int, float, str, Decimal, date, bytes, bool)
already matches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


def row_converter(schema: Any) -> Callable[[Any], dict[str, Any]]:
    """A function from a pyspark Row of `schema` to a dict of DuckDB-shaped values."""
    from pyspark.sql.types import TimestampType

    names = [field.name for field in schema.fields]
    instants = {f.name for f in schema.fields if isinstance(f.dataType, TimestampType)}

    def convert(row: Any) -> dict[str, Any]:
        values = dict(zip(names, row, strict=True))
        for name in instants:
            value = values[name]
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                values[name] = value.astimezone(dt.UTC)  # naive local -> the instant, in UTC
        return values

    return convert
