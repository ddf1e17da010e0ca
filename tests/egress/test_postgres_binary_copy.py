"""Binary COPY (pgpq) into PostgreSQL lands exactly the rows CSV COPY lands, and is only
used where the Arrow type encodes to the very type of the table's column."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from tidegate.egress.destinations.postgres.client import PostgresDestination, binary_plan

pytestmark = pytest.mark.services

COLUMNS = {
    "id": "BIGINT",
    "name": "VARCHAR",
    "score": "DOUBLE",
    "small": "INTEGER",
    "flag": "BOOLEAN",
    "day": "DATE",
    "at": "TIMESTAMP",
    "at_tz": "TIMESTAMP WITH TIME ZONE",
}


def _batch() -> pa.Table:
    utc = dt.UTC
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            # what CSV must quote or escape, non-ASCII, an empty string and a null
            "name": pa.array(['a,"b"\nc', "Zoë \\N ☃", "", None], pa.string()),
            "score": pa.array([0.1, -1e300, float("inf"), None], pa.float64()),
            "small": pa.array([1, -(2**31), 2**31 - 1, None], pa.int32()),
            "flag": pa.array([True, False, None, True], pa.bool_()),
            "day": pa.array([dt.date(1999, 12, 31), dt.date(2000, 1, 1), None, dt.date(1, 1, 1)]),
            "at": pa.array(
                [
                    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
                    None,
                    dt.datetime(1970, 1, 1),
                    dt.datetime(1900, 6, 1, 12),
                ],
                pa.timestamp("us"),
            ),
            "at_tz": pa.array(
                [
                    dt.datetime(2024, 1, 1, tzinfo=utc),
                    dt.datetime(1960, 5, 5, 5, tzinfo=utc),
                    None,
                    dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=utc),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def _read(dsn: str, table: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))
        ).fetchall()


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_binary_copy_lands_what_csv_lands(pg_dsn: str, mode: str) -> None:
    binary, csv = f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}"
    try:
        for table, allow_binary in ((binary, True), (csv, False)):
            dest = PostgresDestination(pg_dsn, table)
            dest.open(COLUMNS, "id")
            if allow_binary:
                assert binary_plan(_batch().schema, dest._column_types) is not None
            else:
                dest._column_types = {}  # no types known: the CSV path
            dest.write(_batch(), mode)
            dest.write(_batch().slice(1, 2), "upsert")  # a merge through staging too
            dest.close()
        assert _read(pg_dsn, binary) == _read(pg_dsn, csv)
        assert len(_read(pg_dsn, binary)) == 4
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for table in (binary, csv):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_binary_plan_refuses_what_would_not_land_the_same() -> None:
    naive = pa.schema([pa.field("at", pa.timestamp("us"))])
    zoned = pa.schema([pa.field("at", pa.timestamp("us", tz="UTC"))])
    assert binary_plan(naive, {"at": "timestamp"}) is not None
    assert binary_plan(zoned, {"at": "timestamptz"}) is not None
    # a naive time into timestamptz means the session's zone by CSV, UTC by binary
    assert binary_plan(naive, {"at": "timestamptz"}) is None
    assert binary_plan(zoned, {"at": "timestamp"}) is None
    assert binary_plan(pa.schema([pa.field("at", pa.timestamp("ns"))]), {"at": "timestamp"}) is None
    # int64 into an int4 column: binary sizes differ, PostgreSQL would refuse the batch
    assert binary_plan(pa.schema([pa.field("n", pa.int64())]), {"n": "int4"}) is None
    assert binary_plan(pa.schema([pa.field("n", pa.int64())]), {"n": "numeric"}) is None
    assert binary_plan(pa.schema([pa.field("n", pa.string())]), {"n": "jsonb"}) is None
    assert binary_plan(pa.schema([pa.field("n", pa.string())]), {"n": "varchar"}) is not None
    assert binary_plan(pa.schema([pa.field("n", pa.int64())]), {}) is None  # unknown column
