"""CDC on the real PostgreSQL: snapshot, inserts, updates, deletes, and a restart mid-stream."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.ingest.intake import open_intake
from tidegate.ingest.postgres_cdc import PostgresCdc
from tidegate.platform import Platform
from tidegate.runtime.worker import process_batch
from tidegate.store.online.codec import decode_row

pytestmark = pytest.mark.services


def _sync(platform: Platform) -> None:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer("cdc-test", ["accounts"])
    try:
        while records := consumer.poll(1000, 0.2):
            process_batch(platform, records)
            consumer.commit()
    finally:
        consumer.close()
        intake.close()


def _poll(cdc: PostgresCdc, expected: int) -> int:
    """The test server runs with synchronous_commit=off: WAL reaches logical decoding when
    the WAL writer flushes it, a moment after the commit. Poll until it has."""
    moved, deadline = 0, time.monotonic() + 60
    while moved < expected and time.monotonic() < deadline:
        moved += cdc.poll()
        time.sleep(0.05)
    return moved


def _tier(platform: Platform, customer: int) -> Any:
    encoded = platform.online.read("customer_orders", str(customer))
    assert encoded is not None
    types = {c: s.type for c, s in platform.project.products["customer_orders"].columns.items()}
    return decode_row(encoded, types)["tier"]


def test_snapshot_then_changes_then_resume(
    built_stream_project: Path, pg_dsn: str, pg_table: str
) -> None:
    import psycopg

    accounts = built_stream_project / "sources" / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("table: accounts", f"table: {pg_table}"))
    slot = f"tg_{uuid.uuid4().hex[:12]}"
    pg = psycopg.connect(pg_dsn, autocommit=True)
    pg.execute(f"CREATE TABLE {pg_table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    pg.execute(f"INSERT INTO {pg_table} VALUES (1, 11, 'free'), (2, 12, 'gold'), (3, 13, 'pro')")
    cdc: PostgresCdc | None = None
    try:
        with Platform.open(built_stream_project) as platform:
            intake = open_intake(platform.project)
            cdc = PostgresCdc(pg_dsn, slot, intake, "accounts", pg_table)
            assert cdc.start() == 3
            _sync(platform)
            assert [_tier(platform, c) for c in (11, 12, 13)] == ["free", "gold", "pro"]

            pg.execute(f"UPDATE {pg_table} SET tier = 'gold' WHERE id = 1")
            pg.execute(f"DELETE FROM {pg_table} WHERE id = 2")
            pg.execute(f"INSERT INTO {pg_table} VALUES (4, 14, 'free')")
            assert _poll(cdc, 3) == 3
            _sync(platform)
            assert [_tier(platform, c) for c in (11, 12, 13, 14)] == ["gold", None, "pro", "free"]

            # Changes while tidegate is down; a new process resumes from the slot.
            cdc.close()
            intake.close()
            pg.execute(f"UPDATE {pg_table} SET customer_id = 15 WHERE id = 3")
            pg.execute(f"DELETE FROM {pg_table} WHERE id = 4")
            intake = open_intake(platform.project)
            cdc = PostgresCdc(pg_dsn, slot, intake, "accounts", pg_table)
            assert cdc.start() == 0  # the snapshot is not taken twice
            assert _poll(cdc, 2) == 2
            assert cdc.poll() == 0  # the slot moved past what is in the log
            _sync(platform)
            assert [_tier(platform, c) for c in (13, 14, 15)] == [None, None, "pro"]
            with platform.warehouse.cursor() as db:
                rows = db.execute('SELECT * FROM raw."accounts" ORDER BY id').fetchall()
            assert rows == [(1, 11, "gold"), (3, 15, "pro")]
            intake.close()
    finally:
        if cdc is not None:
            cdc.drop()
            cdc.close()
        pg.close()


@pytest.mark.parametrize("plugin", ["wal2json", "pgoutput"])
def test_unchanged_toasted_values_stay_and_truncates_empty_the_table(
    built_stream_project: Path, pg_dsn: str, pg_table: str, plugin: str
) -> None:
    """An UPDATE that leaves a TOASTed column alone does not send it (wal2json leaves it
    out): the stored value stays. A TRUNCATE empties the raw table and the product."""
    import secrets

    import psycopg

    accounts = built_stream_project / "sources" / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("table: accounts", f"table: {pg_table}"))
    slot = f"tg_{uuid.uuid4().hex[:12]}"
    big = "gold-" + secrets.token_hex(20_000)  # incompressible: stored out of line (TOAST)
    pg = psycopg.connect(pg_dsn, autocommit=True)
    pg.execute(f"CREATE TABLE {pg_table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    cdc: PostgresCdc | None = None
    try:
        with Platform.open(built_stream_project) as platform:
            intake = open_intake(platform.project)
            cdc = PostgresCdc(pg_dsn, slot, intake, "accounts", pg_table, plugin=plugin)
            assert cdc.start() == 0
            pg.execute(f"INSERT INTO {pg_table} VALUES (1, 11, %s), (2, 12, 'free')", (big,))
            pg.execute(f"UPDATE {pg_table} SET customer_id = 13 WHERE id = 1")
            assert _poll(cdc, 3) == 3
            _sync(platform)
            assert _tier(platform, 13) == big
            assert _tier(platform, 11) is None
            pg.execute(f"TRUNCATE {pg_table}")
            assert _poll(cdc, 1) == 1
            _sync(platform)
            with platform.warehouse.cursor() as db:
                assert db.execute('SELECT count(*) FROM raw."accounts"').fetchone() == (0,)
            assert [_tier(platform, c) for c in (11, 12, 13)] == [None, None, None]
            intake.close()
    finally:
        if cdc is not None:
            cdc.drop()
            cdc.close()
        pg.close()


def test_a_missing_table_is_a_clear_error_and_logs_nothing(
    built_stream_project: Path, pg_dsn: str, pg_table: str
) -> None:
    """The snapshot of a table that does not exist fails with the table's name, before
    anything reaches the log (an earlier snapshot's rows are not emptied by a retry)."""
    from tidegate.errors import TidegateError

    accounts = built_stream_project / "sources" / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("table: accounts", f"table: {pg_table}"))
    slot = f"tg_{uuid.uuid4().hex[:12]}"
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        cdc = PostgresCdc(pg_dsn, slot, intake, "accounts", pg_table)
        try:
            with pytest.raises(TidegateError) as caught:
                cdc.start()
            assert f"cannot read public.{pg_table}" in caught.value.message
            assert sum(intake.log.end_offsets("accounts").values()) == 0
        finally:
            cdc.drop()
            cdc.close()
            intake.close()
