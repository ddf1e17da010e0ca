"""Small shared types (layer 0): the type families of contract column types.

Every stage that turns values into the types a contract declares (ingest validation,
the online store's codec, treatments, destinations) agrees on these families.
"""

from __future__ import annotations

_NUMERIC = {
    "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC",
}  # fmt: skip
_INTEGER = {
    "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
}  # fmt: skip


def type_family(column_type: str) -> str:
    """`string`, `integer`, `float`, `date`, `timestamp` or `other`, from a contract type."""
    base = column_type.upper().split("(")[0].strip()
    if base in _INTEGER:
        return "integer"
    if base in _NUMERIC:
        return "float"
    if base == "DATE":
        return "date"
    if base.startswith("TIMESTAMP"):
        return "timestamp"
    if base in {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "UUID"}:
        return "string"
    return "other"
