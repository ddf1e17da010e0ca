"""`registered`: an Arrow table is a DuckDB relation for one block, and only for it."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from tidegate.store.warehouse import registered


def _relations(db: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in db.sql("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}


def test_a_relation_is_queryable_in_the_block_and_gone_after_even_on_error() -> None:
    db = duckdb.connect()
    table = pa.table({"v": [1, 2, 3]})
    with registered(db, "__t", table):
        assert db.sql("SELECT sum(v) FROM __t").fetchall() == [(6,)]
    assert "__t" not in _relations(db)
    with pytest.raises(duckdb.Error), registered(db, "__t", table):
        db.sql("SELECT missing FROM __t").fetchall()
    assert "__t" not in _relations(db)
    with pytest.raises(duckdb.Error):
        db.sql("SELECT * FROM __t").fetchall()
