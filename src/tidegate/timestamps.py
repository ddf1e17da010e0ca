"""The one way tidegate writes a point in time for a person or a file.

ISO 8601 with the UTC offset spelled `+00:00`: `2026-12-05T11:48:11+00:00`. Everywhere a
person or a file sees a time (CLI tables and messages, API JSON, the access package,
file destinations, OpenLineage events, reports) goes through `format_timestamp`, so one
pattern (`TIMESTAMP_PATTERN`) matches them all and they sort as text. Why `+00:00` and
not `Z`: it is what Python, DuckDB and PostgreSQL print for an aware UTC time, so values
a user compares with their own database look the same; both are valid RFC 3339.

Times tidegate itself records (runs, builds, audit records, epoch seconds) are shown to
the second; data values (a datetime from a product's row) keep their fraction of a
second when they have one, since dropping it would change the data.
"""

from __future__ import annotations

import datetime as dt
import re

#: what every formatted timestamp matches (the fraction only on data values that have one)
TIMESTAMP_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?\+00:00")


def format_timestamp(value: dt.datetime | float | int | None) -> str | None:
    """`value` (an aware or naive-UTC datetime, or epoch seconds) as ISO 8601 in UTC.

    None stays None, so optional times stay optional in JSON."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
        return moment.astimezone(dt.UTC).isoformat()
    moment = dt.datetime.fromtimestamp(float(value), dt.UTC)
    return moment.isoformat(timespec="seconds")


def now_timestamp() -> str:
    """The current time, formatted (to the second)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def timestamp_text(value: dt.datetime | float | int | None, missing: str = "-") -> str:
    """For tables and messages: the formatted time, or `missing`."""
    formatted = format_timestamp(value)
    return missing if formatted is None else formatted
