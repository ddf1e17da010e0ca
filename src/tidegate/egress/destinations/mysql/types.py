"""DuckDB column types → MariaDB/MySQL column types, and values → what PyMySQL sends."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

_DIRECT = {
    "BIGINT": "BIGINT",
    "INT8": "BIGINT",
    "LONG": "BIGINT",
    "INTEGER": "INT",
    "INT": "INT",
    "INT4": "INT",
    "SMALLINT": "SMALLINT",
    "INT2": "SMALLINT",
    "TINYINT": "TINYINT",
    "UBIGINT": "BIGINT UNSIGNED",
    "UINTEGER": "INT UNSIGNED",
    "HUGEINT": "DECIMAL(38,0)",
    "DOUBLE": "DOUBLE",
    "FLOAT8": "DOUBLE",
    "FLOAT": "FLOAT",
    "REAL": "FLOAT",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME(6)",
    "TIMESTAMP": "DATETIME(6)",
    "TIMESTAMP WITH TIME ZONE": "DATETIME(6)",
    "TIMESTAMPTZ": "DATETIME(6)",
    "BLOB": "LONGBLOB",
}


def mysql_type(duckdb_type: str, *, is_key: bool) -> str:
    base = duckdb_type.upper().strip()
    if re.match(r"^(DECIMAL|NUMERIC)\s*\(\s*\d+\s*,\s*\d+\s*\)$", base):
        return base.replace("NUMERIC", "DECIMAL")
    if base in _DIRECT:
        return _DIRECT[base]
    # text, and anything nested (lists, structs) as JSON text; a key needs a bounded length
    return "VARCHAR(255)" if is_key else "MEDIUMTEXT"


def mysql_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return value


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
