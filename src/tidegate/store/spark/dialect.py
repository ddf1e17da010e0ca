"""Product SQL in tidegate's dialect (DuckDB's) transpiled to Spark SQL with SQLGlot.

SQLGlot does most of the work; the rewrites here fix where its Spark output would run
but mean something else than DuckDB does (tests/store/test_spark_dialect.py holds the
golden cases):

* `format('{} of {}', a, b)` is DuckDB's fmt syntax; SQLGlot keeps the pattern as is in
  `format_string`, whose pattern is printf: `{}` becomes `%s` (and a literal `%`, `%%`).
* `epoch(ts)` is seconds with microseconds in DuckDB; SQLGlot's `unix_timestamp` drops
  the fraction: it becomes `unix_micros(ts) / 1e6`.
* `HUGEINT` has no Spark type: `DECIMAL(38, 0)` holds the same integers up to 10^38.
* types: DuckDB's `TIMESTAMP` is a wall-clock time, Spark's `TIMESTAMP_NTZ`; DuckDB's
  `TIMESTAMPTZ` is an instant, Spark's `TIMESTAMP` (in its UTC session).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from tidegate.errors import SqlError


def _fmt_to_printf(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        two = pattern[i : i + 2]
        if two in ("{{", "}}"):
            out.append(two[0])
            i += 2
        elif two == "{}":
            out.append("%s")
            i += 2
        elif pattern[i] == "%":
            out.append("%%")
            i += 1
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Format):
        pattern = node.this
        if isinstance(pattern, exp.Literal) and pattern.is_string:
            node.set("this", exp.Literal.string(_fmt_to_printf(pattern.this)))
        return node
    if isinstance(node, exp.TimeToUnix) and not node.args.get("format"):
        micros = exp.Anonymous(this="unix_micros", expressions=[exp.cast(node.this, "TIMESTAMPTZ")])
        return exp.Div(this=micros, expression=exp.Literal.number("1000000.0"))
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.INT128:
        return exp.DataType.build("DECIMAL(38, 0)")
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.TIMESTAMP:
        return exp.DataType.build("TIMESTAMP_NTZ", dialect="spark")
    return node


def to_spark_tree(tree: exp.Expr) -> exp.Expr:
    """A DuckDB-dialect syntax tree rewritten for Spark (a copy)."""
    return tree.copy().transform(_rewrite)


def to_spark(sql: str) -> str:
    """DuckDB-dialect SQL as Spark SQL; a parse error is a SqlError that says where."""
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.ParseError as err:
        raise SqlError(f"cannot read the SQL to transpile it for Spark: {err}") from None
    return to_spark_tree(tree).sql(dialect="spark")


def spark_type(duckdb_type: str) -> str:
    """A contract column type (DuckDB spelling) in Spark's: TIMESTAMPTZ -> TIMESTAMP."""
    built: exp.Expr = exp.DataType.build(duckdb_type, dialect="duckdb")
    return to_spark_tree(built).sql(dialect="spark")
