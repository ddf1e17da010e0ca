"""Values in and out of Redis hash fields (strings), typed by the synced column types."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tidegate.type_families import type_family


def encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def decode(text: str, column_type: str) -> Any:
    if column_type.upper().startswith("BOOL"):
        return text == "true"
    family = type_family(column_type)
    if family == "integer":
        return int(text)
    if family == "float":
        return float(text)
    return text
