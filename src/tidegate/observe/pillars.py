"""Four of the five pillars, measured on a version table in one pass (lineage is `lineage`).

* freshness    `freshness.event_lag_s` (now - newest timestamp in the data),
               `freshness.since_update_s` (since the previous live version), the SLO and
               whether it was breached
* volume       `volume.rows`, `volume.rows_changed` (rows not in the previous version),
               `volume.rows_removed` (keys gone since the previous version)
* distribution per column: `null_percent`, `distinct_count`, and by type `min`, `max`,
               `mean`, `stddev` (numbers; timestamps as epoch seconds) or `length_min`,
               `length_max`, `length_mean` (text). A classified column (personal
               data: an id, a birth date) gets no `min` or `max`: those are one
               person's value, kept in the metadata for as long as the series is,
               where no erasure can tell them from anyone's
* schema       a fingerprint of (name, type) in order; added, removed and retyped columns
               against the previous snapshot
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from tidegate.observe.timeseries import SchemaSnapshot

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "REAL", "DOUBLE")
TEMPORAL = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
TEXT = ("VARCHAR", "TEXT", "STRING")

#: statistics that are one row's value: never recorded for classified columns
EXTREMES = ("min", "max")

Metric = tuple[str, str, float | None]  # (metric, column or '', value)


@dataclass
class SchemaChange:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def lines(self) -> list[str]:
        out = [f"column added: {c}" for c in self.added]
        out += [f"column removed: {c}" for c in self.removed]
        out += [f"column retyped: {c} {a} -> {b}" for c, (a, b) in self.retyped.items()]
        return out


@dataclass
class Observation:
    product: str
    version: int | None
    at: float
    metrics: list[Metric]
    schema: SchemaSnapshot
    schema_change: SchemaChange | None = None

    def value(self, metric: str, column: str = "") -> float | None:
        for m, c, v in self.metrics:
            if m == metric and c == column:
                return v
        return None


def fingerprint(columns: dict[str, str]) -> str:
    text = "\n".join(f"{name}:{kind}" for name, kind in columns.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def schema_diff(old: dict[str, str], new: dict[str, str]) -> SchemaChange:
    return SchemaChange(
        added=[c for c in new if c not in old],
        removed=[c for c in old if c not in new],
        retyped={c: (old[c], new[c]) for c in new if c in old and old[c] != new[c]},
    )


def _family(kind: str) -> str:
    upper = kind.upper()
    if upper.startswith("DECIMAL") or upper in NUMERIC:
        return "number"
    if upper in TEMPORAL or upper.startswith("TIMESTAMP"):
        return "time"
    if upper in TEXT or upper.startswith("VARCHAR"):
        return "text"
    return "other"


def column_types(cursor: Any, relation: str) -> dict[str, str]:
    rows = cursor.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _aggregates(
    columns: dict[str, str], private: frozenset[str] = frozenset()
) -> list[tuple[str, str, exp.Expr]]:
    specs: list[tuple[str, str, exp.Expr]] = [("volume.rows", "", exp.Count(this=exp.Star()))]
    for name, kind in columns.items():
        col = exp.column(name, quoted=True)
        family = _family(kind)
        specs.append(("null_percent", name, _null_percent(col)))
        specs.append(("distinct_count", name, exp.func("approx_count_distinct", col.copy())))
        value: exp.Expr | None = None
        if family == "number":
            value = exp.cast(col.copy(), "DOUBLE")
        elif family == "time":
            value = exp.func("epoch", col.copy())
        if value is not None:
            for metric, func in (
                ("min", "min"),
                ("max", "max"),
                ("mean", "avg"),
                ("stddev", "stddev_samp"),
            ):
                if name in private and metric in EXTREMES:
                    continue
                specs.append((metric, name, exp.func(func, value.copy())))
        elif family == "text":
            length = exp.func("length", col.copy())
            for metric, func in (
                ("length_min", "min"),
                ("length_max", "max"),
                ("length_mean", "avg"),
            ):
                specs.append((metric, name, exp.func(func, length.copy())))
    return specs


def _null_percent(col: exp.Column) -> exp.Expr:
    from tidegate.observe.quality import null_percent

    return null_percent(col)


def measure(
    cursor: Any,
    product: str,
    version: int | None,
    relation: str,
    *,
    key: str,
    at: float,
    previous_relation: str | None = None,
    previous_schema: SchemaSnapshot | None = None,
    previous_built_at: float | None = None,
    slo_seconds: float | None = None,
    private: frozenset[str] = frozenset(),
) -> Observation:
    """Measure `relation` (a quoted DuckDB relation) in one aggregate query (+ the diff);
    `private`: classified columns, measured without `min` and `max`."""
    columns = column_types(cursor, relation)
    specs = _aggregates(columns, private)
    values = ", ".join(
        exp.cast(expr, "DOUBLE").as_(f"m{i}").sql(dialect="duckdb")
        for i, (_, _, expr) in enumerate(specs)
    )
    row = cursor.execute(f"SELECT {values} FROM {relation}").fetchone() or ()
    metrics: list[Metric] = [
        (metric, column, None if value is None else float(value))
        for (metric, column, _), value in zip(specs, row, strict=False)
    ]
    newest = [
        v for m, c, v in metrics if m == "max" and v is not None and _family(columns[c]) == "time"
    ]
    if newest:
        metrics.append(("freshness.event_lag_s", "", at - max(newest)))
    if previous_built_at is not None:
        since = at - previous_built_at
        metrics.append(("freshness.since_update_s", "", since))
        if slo_seconds is not None:
            metrics.append(("freshness.slo_s", "", slo_seconds))
            metrics.append(("freshness.breach", "", float(since > slo_seconds)))
    if previous_relation is not None:
        metrics += _changes(cursor, relation, previous_relation, key, columns)
    snapshot = SchemaSnapshot(product, version, at, fingerprint(columns), columns)
    change = None
    if previous_schema is not None and previous_schema.fingerprint != snapshot.fingerprint:
        change = schema_diff(previous_schema.columns, columns)
    metrics.append(("schema.columns", "", float(len(columns))))
    metrics.append(("schema.changed", "", float(bool(change))))
    return Observation(product, version, at, metrics, snapshot, change)


def _changes(cursor: Any, new: str, old: str, key: str, columns: dict[str, str]) -> list[Metric]:
    try:
        old_columns = column_types(cursor, old)
    except Exception:  # the previous version was dropped meanwhile
        return []
    quoted_key = '"' + key.replace('"', '""') + '"'
    out: list[Metric] = []
    if old_columns == columns:
        row = cursor.execute(
            f"SELECT count(*) FROM (SELECT * FROM {new} EXCEPT SELECT * FROM {old})"
        ).fetchone()
        out.append(("volume.rows_changed", "", float(row[0]) if row else None))
    if key in old_columns and key in columns:
        row = cursor.execute(
            f"SELECT count(*) FROM {old} o WHERE NOT EXISTS"
            f" (SELECT 1 FROM {new} n WHERE n.{quoted_key} = o.{quoted_key})"
        ).fetchone()
        out.append(("volume.rows_removed", "", float(row[0]) if row else None))
    return out
