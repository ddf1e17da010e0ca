"""The guard's Spark face: an access plan's row filter and treatments as Spark SQL.

The same plan, applied by Spark to a product built on Spark, gives what `select_sql`
(DuckDB), `apply_row` and `apply_arrow` give, value for value
(tests/privacy/test_treatment_equivalence_spark.py). Most of each treatment is the
DuckDB tree transpiled by SQLGlot; three places differ in meaning and are rewritten:

* `floor(double)` is a BIGINT in Spark (it saturates, and NaN becomes 0), a DOUBLE in
  DuckDB: here it is `floor` only where that is exact (|x| < 2^52, and x not 0 so -0.0
  stays), else x itself, as C's floor on a double gives.
* hashing needs the value's text as DuckDB prints it. Spark prints an instant without
  its `+00` and a double as Java does (`1.0E10`), so: instants get `+00` appended,
  numbers of the float family go through a tiny Python UDF giving Python's `repr`
  (the shortest round trip, what DuckDB prints), every NaN as `nan`.
* `strpos` (the mask's `@` search) has no Spark function of that name: `LOCATE`.
* the row filter's subject list is a Spark view, joined by value, never pasted as text.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from tidegate.privacy.guard import AccessPlan
from tidegate.privacy.treatments import HashKey, apply_sql
from tidegate.project.models import TreatmentSpec
from tidegate.store.spark.dialect import to_spark_tree
from tidegate.type_families import type_family

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FLOAT_TEXT_UDF = "tidegate_float_text"
SUBJECTS_VIEW = "tidegate_guard_subjects"
EXACT_FLOOR_LIMIT = "4.503599627370496E15"  # 2^52: every double at or past it is whole


def register_udfs(spark: SparkSession) -> None:
    """Register the UDFs the Spark face uses (idempotent, cheap). The function is built
    here, not at module level, so it is shipped to executors by value: their Python
    needs no tidegate installed."""
    from pyspark.sql.types import StringType

    def float_text(value: float | None) -> str | None:
        """Python's repr of a double (DuckDB's CAST(DOUBLE AS VARCHAR)); every NaN `nan`."""
        if value is None:
            return None
        number = float(value)
        return "nan" if number != number else repr(number)

    spark.udf.register(FLOAT_TEXT_UDF, float_text, StringType())


def _double(text: str) -> exp.Expr:
    """A DOUBLE constant (a bare literal this large would be a DECIMAL in Spark)."""
    return exp.cast(exp.Literal.string(text), "DOUBLE")


def _bottom_up(tree: exp.Expr) -> exp.Expr:
    """Apply `_spark_meaning` to every node, children before parents (nested floors)."""
    root = tree
    for node in reversed(list(tree.walk(bfs=False))):
        new = _spark_meaning(node)
        if new is node:
            continue
        if node is root:
            root = new
        else:
            node.replace(new)
    return root


def _spark_meaning(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "strpos":
        text, needle = node.expressions  # Spark has no strpos: LOCATE(needle, text)
        return exp.StrPosition(this=text.copy(), substr=needle.copy())
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "floor":
        x = node.expressions[0]
        passthrough = exp.or_(
            exp.EQ(this=x.copy(), expression=exp.Literal.number(0)),
            exp.not_(exp.LT(this=exp.Abs(this=x.copy()), expression=_double(EXACT_FLOOR_LIMIT))),
        )
        floored = exp.cast(exp.Anonymous(this="floor", expressions=[x.copy()]), "DOUBLE")
        return exp.Case(ifs=[exp.If(this=passthrough, true=x.copy())], default=floored)
    if isinstance(node, exp.TryCast) and node.to.is_type(exp.DataType.Type.BIGINT):
        # Spark saturates a double past BIGINT's range to its bounds; DuckDB gives NULL
        x = node.this
        inside = exp.and_(
            exp.GTE(this=x.copy(), expression=_double("-9.223372036854775808E18")),
            exp.LT(this=x.copy(), expression=_double("9.223372036854775808E18")),
        )
        return exp.Case(ifs=[exp.If(this=inside, true=exp.cast(x.copy(), "BIGINT"))])
    return node


def _hash_text(column: exp.Expr, column_type: str) -> exp.Expr:
    family = type_family(column_type)
    if family == "float":
        return exp.Anonymous(this=FLOAT_TEXT_UDF, expressions=[exp.cast(column.copy(), "DOUBLE")])
    text: exp.Expr = exp.cast(column.copy(), "STRING")
    upper = column_type.upper()
    if family == "timestamp" and ("TZ" in upper or "TIME ZONE" in upper):
        text = exp.Concat(expressions=[text, exp.Literal.string("+00")])
    return text


def spark_treatment(
    spec: TreatmentSpec, column: exp.Expression, column_type: str, key: HashKey | None
) -> str:
    """The treated column as Spark SQL text."""
    if spec.treatment == "hash":
        if key is None:
            raise ValueError("hash treatment needs a key")

        def digest(pad: bytes, data: exp.Expr) -> exp.Expr:
            joined = exp.Concat(expressions=[exp.Unhex(this=exp.Literal.string(pad.hex())), data])
            return exp.SHA2(this=joined, length=exp.Literal.number(256))

        encoded = exp.Encode(
            this=_hash_text(column, column_type), charset=exp.Literal.string("utf-8")
        )
        inner = digest(key.inner_pad, encoded)
        tree: exp.Expr = digest(key.outer_pad, exp.Unhex(this=inner))
        return tree.sql(dialect="spark")
    tree = _bottom_up(apply_sql(spec, column, column_type, key))
    return to_spark_tree(tree).sql(dialect="spark")


def spark_select(plan: AccessPlan, relation: str, subjects_view: str = SUBJECTS_VIEW) -> str:
    """`SELECT <treated columns> FROM relation WHERE <row filter>` in Spark SQL; the
    filter reads `subjects_view(subject STRING)` (see `apply_plan`)."""
    projections = []
    for c in plan.visible_columns:
        column = exp.column(c.name, table="t", quoted=True)
        treated = spark_treatment(c.treatment, column, c.type, plan.hash_key)
        projections.append(f"{treated} AS `{c.name}`")
    sql = f"SELECT {', '.join(projections) or '1 AS `_`'} FROM {relation} AS t"
    if plan.row_filter is not None and plan.subject_column is not None:
        subject = f"CAST(t.`{plan.subject_column}` AS STRING)"
        inside = f"{subject} IN (SELECT subject FROM {subjects_view})"
        if plan.row_filter.mode == "allow":
            sql += f" WHERE {inside}"
        else:
            sql += f" WHERE {subject} IS NULL OR NOT {inside}"
    return sql


def apply_plan(spark: SparkSession, plan: AccessPlan, frame: DataFrame) -> DataFrame:
    """`frame` as the plan's purpose may see it, computed by Spark."""
    from pyspark.sql.types import StringType, StructField, StructType

    register_udfs(spark)
    relation = f"tidegate_guard_{uuid.uuid4().hex}"
    frame.createOrReplaceTempView(relation)
    members = sorted(plan.row_filter.subjects) if plan.row_filter else []
    subjects: list[Any] = [(s,) for s in members]
    schema = StructType([StructField("subject", StringType(), True)])
    spark.createDataFrame(subjects, schema).createOrReplaceTempView(f"{relation}_subjects")
    columns = [c.name for c in plan.visible_columns]
    result = spark.sql(spark_select(plan, relation, f"{relation}_subjects"))
    return result.select(*columns) if columns else result.select()
