"""The sync diff's fast paths give what the materialized diff gives, row for row.

`Diff.compare` takes a one-pass join (keys non-null and unique, or known to be) or a
streamed first sync when it can, and a temporary table of every current row otherwise.
Whatever the path, the counts, the rows to send (with their changed-or-added mark and
hash) and the removed rows must be the same: these properties run both on random
current rows, states and dismissed refusals.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.egress.sync.diff import PREV_MARK, Diff
from tidegate.egress.sync.mapping import HASH, KEY, SOURCE_KEY, SUBJECT

SOURCE = "__test_rows"
CURRENT_SQL = (
    f'SELECT k AS "id", v AS "v", CAST(k AS VARCHAR) AS "{KEY}", '
    f'CAST(hash(v) AS VARCHAR) AS "{HASH}", s AS "{SUBJECT}", '
    f'CAST(k AS VARCHAR) AS "{SOURCE_KEY}" FROM {SOURCE}'
)

keys = st.integers(min_value=0, max_value=30)
values = st.integers(min_value=0, max_value=3)


def _hash(con: Any, value: int) -> str:
    return str(con.execute("SELECT CAST(hash(?::BIGINT) AS VARCHAR)", [value]).fetchall()[0][0])


def _state(con: Any, rows: dict[int, int]) -> Any:
    return pa.table(
        {
            "key": pa.array([str(k) for k in rows], pa.string()),
            "row_hash": pa.array([_hash(con, v) for v in rows.values()], pa.string()),
            "subject": pa.array([f"s{k}" for k in rows], pa.string()),
            "source_key": pa.array([str(k) for k in rows], pa.string()),
            "written_at": pa.array([1.0] * len(rows), pa.float64()),
        }
    )


def _run(
    current: list[tuple[int | None, int]],
    previous: dict[int, int],
    dismissed: dict[int, int],
    *,
    full: bool,
    materialize: bool,
    unique_keys: bool,
) -> tuple[Any, ...]:
    con = duckdb.connect()
    rows = pa.table(
        {
            "k": pa.array([k for k, _ in current], pa.int64()),
            "v": pa.array([v for _, v in current], pa.int64()),
            "s": pa.array([None if k is None else f"s{k}" for k, _ in current], pa.string()),
        }
    )
    diff = Diff(con, CURRENT_SQL, {SOURCE: rows}, unique_keys=unique_keys)
    if materialize:
        diff.current_keys()  # what a partial run does first: the materialized diff
    counts = diff.compare(
        _state(con, previous),
        {str(k): _hash(con, v) for k, v in dismissed.items()},
        resend_all=full,
    )
    sent = sorted(
        (row[KEY], row[HASH], row[PREV_MARK], row["v"])
        for table in diff.changed(7)
        for row in table.to_pylist()
    )
    removed = [(r.key, r.row_hash, r.subject) for r in diff.removed()]
    con.close()
    return counts.current, counts.unchanged, counts.skipped, diff.candidates, sent, removed


@settings(max_examples=80, deadline=None)
@given(
    current=st.lists(st.tuples(st.one_of(st.none(), keys), values), max_size=25),
    previous=st.dictionaries(keys, values, max_size=20),
    dismissed=st.dictionaries(keys, values, max_size=5),
    full=st.booleans(),
)
def test_every_path_of_the_diff_agrees_with_the_materialized_one(
    current: list[tuple[int | None, int]],
    previous: dict[int, int],
    dismissed: dict[int, int],
    full: bool,
) -> None:
    expected = _run(current, previous, dismissed, full=full, materialize=True, unique_keys=False)
    assert _run(current, previous, dismissed, full=full, materialize=False, unique_keys=False) == (
        expected
    )


@settings(max_examples=80, deadline=None)
@given(
    current=st.dictionaries(keys, values, max_size=25),
    previous=st.dictionaries(keys, values, max_size=20),
    dismissed=st.dictionaries(keys, values, max_size=5),
    full=st.booleans(),
)
def test_known_unique_keys_skip_the_key_count_and_change_nothing(
    current: dict[int, int],
    previous: dict[int, int],
    dismissed: dict[int, int],
    full: bool,
) -> None:
    rows: list[tuple[int | None, int]] = list(current.items())
    expected = _run(rows, previous, dismissed, full=full, materialize=True, unique_keys=False)
    assert _run(rows, previous, dismissed, full=full, materialize=False, unique_keys=True) == (
        expected
    )
