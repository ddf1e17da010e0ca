"""`recompute` compares a small batch's old and new rows in Python (`_compare_small`)
and a large one in DuckDB (`compare_in_duckdb`); both must find the same changed rows
and gone keys, or the online store and the change stream would differ with batch size.
`changed_keys` takes its keys from Arrow in the simple case (`_keys_in_arrow`): the same
keys the DuckDB query finds."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.products.incremental import (
    _NOT_SIMPLE,
    _compare_small,
    _keys_in_arrow,
    compare_in_duckdb,
)

SCHEMA = pa.schema([("k", pa.int64()), ("n", pa.int64()), ("x", pa.float64()), ("s", pa.string())])
VALUES = st.tuples(
    st.one_of(st.none(), st.integers(-3, 3)),
    st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf])),
    st.one_of(st.none(), st.sampled_from(["", "a", "b"])),
)
ROWS = st.dictionaries(st.integers(0, 12), VALUES, max_size=12)


def _table(rows: dict[int, tuple[Any, ...]]) -> Any:
    return pa.Table.from_pylist(
        [{"k": k, "n": n, "x": x, "s": s} for k, (n, x, s) in rows.items()], schema=SCHEMA
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=ROWS, new=ROWS)
def test_the_small_compare_finds_what_duckdb_finds(
    old: dict[int, tuple[Any, ...]], new: dict[int, tuple[Any, ...]]
) -> None:
    before, after = _table(old), _table(new)
    small = _compare_small(before, after, "k")
    assert small is not None
    with duckdb.connect() as db:
        expected = compare_in_duckdb(db, before, after, "k")
    assert _same(small[0], expected[0]), (small[0], expected[0])
    assert small[1] == expected[1]


def test_the_small_compare_leaves_duplicate_keys_and_large_batches_to_duckdb() -> None:
    twice = pa.Table.from_pylist([{"k": 1}, {"k": 1}])
    once = pa.Table.from_pylist([{"k": 1}])
    assert _compare_small(once, twice, "k") is None
    many = pa.table({"k": pa.array(range(1_500), pa.int64())})
    assert _compare_small(many, many, "k") is None
    unchanged = _compare_small(once, once, "k")
    assert unchanged == ([], [])


KEYS = st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(first=KEYS, second=KEYS)
def test_keys_from_arrow_are_the_duckdb_query_keys(
    first: list[int | None], second: list[int | None]
) -> None:
    touched = {
        "a": pa.table({"k": pa.array(first, pa.int64()), "v": pa.array([1] * len(first))}),
        "b": pa.table({"k": pa.array(second, pa.int64())}),
    }
    key_columns = {"a": "k", "b": "k"}
    keys = _keys_in_arrow("k", "BIGINT", key_columns, {}, touched)
    if not first and not second:
        assert keys is None
        return
    with duckdb.connect() as db:
        db.register("t0", touched["a"])
        db.register("t1", touched["b"])
        expected = db.sql(
            "SELECT DISTINCT k FROM (SELECT TRY_CAST(k AS BIGINT) AS k FROM t0 UNION ALL"
            " SELECT TRY_CAST(k AS BIGINT) AS k FROM t1) WHERE k IS NOT NULL ORDER BY 1"
        ).to_arrow_table()
    assert keys.column("k").to_pylist() == expected.column("k").to_pylist()


def test_keys_need_duckdb_with_a_closure_or_another_type() -> None:
    touched = {"a": pa.table({"k": pa.array([1, 2], pa.int32())})}
    assert _keys_in_arrow("k", "BIGINT", {"a": "k"}, {}, touched) is _NOT_SIMPLE
    touched = {"a": pa.table({"k": pa.array([1, 2], pa.int64()), "g": pa.array([1, 1])})}
    closures = {"a": (("g",),)}
    assert _keys_in_arrow("k", "BIGINT", {"a": "k"}, closures, touched) is _NOT_SIMPLE
    assert _keys_in_arrow("k", "INTEGER", {"a": "k"}, {}, touched) is _NOT_SIMPLE
