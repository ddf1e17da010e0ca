"""The Spark face of each treatment equals its value face (and so its DuckDB face).

A product built on Spark is guarded by Spark (`privacy/guard_spark.py`); a difference
would show the same person differently depending on the engine. Same generated data as
tests/privacy/test_treatment_equivalence.py, in bigger batches per Spark query (each
query costs a Spark job, so fewer, larger examples).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from tidegate.privacy.guard_spark import register_udfs, spark_treatment
from tidegate.privacy.treatments import HashKey, apply_value, purpose_key
from tidegate.project.models import TreatmentSpec
from tidegate.store.spark.dialect import spark_type

from .test_treatment_equivalence import _EDGE_FLOATS, _EDGE_INTS, FAMILIES, SPECS, _keys, exact

pytestmark = pytest.mark.services


def run_spark(
    spark: Any,
    spec: TreatmentSpec,
    column_type: str,
    arrow_type: pa.DataType,
    values: list[Any],
    key: HashKey,
) -> list[Any]:
    register_udfs(spark)
    frame = spark.createDataFrame(pa.table({"v": pa.array(values, type=arrow_type)}))
    frame.createOrReplaceTempView("incoming")
    treated = spark_treatment(spec, exp.column("v", table="t", quoted=True), column_type, key)
    typed = f"SELECT CAST(v AS {spark_type(column_type)}) AS v FROM incoming"  # as builds cast
    table = spark.sql(f"SELECT {treated} AS `out` FROM ({typed}) AS t").toArrow()
    return list(table.column("out").to_pylist())


@pytest.mark.parametrize("treatment", sorted(SPECS))
@pytest.mark.parametrize("column_type", sorted(FAMILIES))
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_spark_face_equals_value_face(
    spark: Any, treatment: str, column_type: str, data: st.DataObject
) -> None:
    arrow_type, values_strategy = FAMILIES[column_type]
    spec = data.draw(SPECS[treatment], label="spec")
    key = data.draw(_keys, label="key")
    values = data.draw(
        st.lists(st.one_of(st.none(), values_strategy), min_size=1, max_size=40), label="values"
    )
    from_spark = run_spark(spark, spec, column_type, arrow_type, values, key)
    from_python = [apply_value(spec, v, column_type, key) for v in values]
    assert [exact(v) for v in from_spark] == [exact(v) for v in from_python]


@pytest.mark.parametrize(
    ("column_type", "values"),
    [("BIGINT", [None, *_EDGE_INTS]), ("DOUBLE", [None, *_EDGE_FLOATS, 1e10, 1e-5, 0.1])],
)
@pytest.mark.parametrize(
    "spec",
    [
        TreatmentSpec(treatment="hash"),
        TreatmentSpec(treatment="generalize", step=10.0),
        TreatmentSpec(treatment="generalize", step=1e-3),
    ],
)
def test_spark_edges(spark: Any, column_type: str, values: list[Any], spec: TreatmentSpec) -> None:
    """The values where Spark differs from DuckDB unless rewritten: floor on huge, NaN,
    infinite and -0.0 doubles; Java's `1.0E10` text for hashing."""
    key = purpose_key(b"master-key-for-tests", "analytics")
    arrow_type = FAMILIES[column_type][0]
    from_spark = run_spark(spark, spec, column_type, arrow_type, values, key)
    from_python = [apply_value(spec, v, column_type, key) for v in values]
    assert [exact(v) for v in from_spark] == [exact(v) for v in from_python]
