"""PostgreSQL restarts in the middle of CDC: capture resumes from the slot, nothing lost.

Changes are captured partly, PostgreSQL is restarted (a real `pg_ctl` stop and start
through scripts/services.sh), more changes are made, and the same `PostgresCdc`
object carries on: it reconnects, the slot still holds every change it had not
advanced past, and in the end the raw table mirrors the operational table exactly.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.errors import ServiceUnavailableError
from tidegate.ingest.intake import open_intake
from tidegate.ingest.postgres_cdc import PostgresCdc
from tidegate.platform import Platform
from tidegate.runtime.worker import process_batch
from tidegate.store.online.codec import decode_row

from .conftest import faults  # type: ignore[import-not-found]

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _apply_log(platform: Platform) -> None:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer("cdc-faults", ["accounts"])
    try:
        while records := consumer.poll(1000, 0.2):
            process_batch(platform, records)
            consumer.commit()
    finally:
        consumer.close()
        intake.close()


def _connect(dsn: str) -> Any:
    import psycopg

    deadline = time.monotonic() + 120
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(0.5)


def _poll(cdc: PostgresCdc) -> int:
    try:
        return cdc.poll(200)
    except ServiceUnavailableError:
        return 0  # still restarting: the next poll tries again


def test_cdc_resumes_from_the_slot_after_a_postgres_restart(
    built_stream_project: Path, pg_dsn: str, pg_table: str
) -> None:
    accounts = built_stream_project / "sources" / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("table: accounts", f"table: {pg_table}"))
    slot = f"tg_{uuid.uuid4().hex[:12]}"
    pg = _connect(pg_dsn)
    pg.execute(f"CREATE TABLE {pg_table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    pg.execute(f"INSERT INTO {pg_table} SELECT i, i, 'free' FROM generate_series(1, 20) AS i")
    cdc: PostgresCdc | None = None
    try:
        with Platform.open(built_stream_project) as platform:
            intake = open_intake(platform.project)
            cdc = PostgresCdc(pg_dsn, slot, intake, "accounts", pg_table)
            assert cdc.start() == 20

            # Before the restart: about 300 changes, of which some are captured (WAL reaches
            # logical decoding when the WAL writer flushes it, a moment after the commit).
            pg.execute(
                f"INSERT INTO {pg_table} SELECT i, i % 50, 'free' FROM generate_series(21, 220) i"
            )
            pg.execute(f"UPDATE {pg_table} SET tier = 'gold' WHERE id % 3 = 0")
            pg.execute(f"DELETE FROM {pg_table} WHERE id % 7 = 0")
            captured = [0]

            def some_captured() -> bool:
                assert cdc is not None
                captured[0] += _poll(cdc)
                return captured[0] > 0

            faults.wait_until(some_captured, 60, "the first changes captured")
            pg.close()

            faults.services("restart", "postgres")

            pg = _connect(pg_dsn)
            pg.execute(f"UPDATE {pg_table} SET tier = 'pro', customer_id = 7 WHERE id % 5 = 0")
            pg.execute(f"DELETE FROM {pg_table} WHERE id % 11 = 0")
            pg.execute(f"INSERT INTO {pg_table} VALUES (1000, 42, 'pro')")
            wanted = pg.execute(f"SELECT id, customer_id, tier FROM {pg_table} ORDER BY id")
            expected = [tuple(row) for row in wanted.fetchall()]

            def mirrored() -> bool:
                assert cdc is not None
                while _poll(cdc):
                    pass
                _apply_log(platform)
                with platform.warehouse.cursor() as db:
                    rows = db.execute('SELECT * FROM raw."accounts" ORDER BY id').fetchall()
                return rows == expected

            faults.wait_until(mirrored, 120, "the raw table to mirror PostgreSQL")
            assert cdc.poll() == 0  # the slot moved past everything in the log

            types = {
                c: s.type for c, s in platform.project.products["customer_orders"].columns.items()
            }
            for customer, tier in ((7, "pro"), (42, "pro")):
                encoded = platform.online.read("customer_orders", str(customer))
                assert encoded is not None
                assert decode_row(encoded, types)["tier"] == tier
            intake.close()
    finally:
        faults.ensure_up("postgres", 5432)
        if cdc is not None:
            cdc.drop()
            cdc.close()
        pg.close()
