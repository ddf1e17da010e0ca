"""Native CDC (`type: postgres, cdc: logical`) and a Debezium topic give the same rows.

One operational table changes (snapshot, insert, updates, a key move, a delete, a
truncate, changes after it). Project A captures it natively; project B receives the
same changes as the Debezium PostgreSQL connector writes them (JSON converter, schemas
off: `op` r/c/u/d/t, a tombstone after each delete). Both raw tables and both
`customer_orders` products must be equal, row for row, before and after the truncate.
Both topics have one partition: with several, no consumer can order a truncate (which
has no key) with the changes of keys on other partitions.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.ingest.intake import open_intake
from tidegate.ingest.postgres_cdc import PostgresCdc
from tidegate.log.base import Message, TopicSpec
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.runtime.worker import process_batch

from ..conftest import streamshop  # type: ignore[import-not-found]

pytestmark = pytest.mark.services

NATIVE = """name: accounts
type: postgres
cdc: logical
dsn: "{dsn}"
table: {table}
slot: {slot}
plugin: {plugin}
key: id
subject: customer_id
columns:
  id: {{type: BIGINT, nullable: false}}
  customer_id: {{type: BIGINT, classification: user.unique_id}}
  tier: {{type: VARCHAR}}
"""


def _build(root: Path) -> None:
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))


def _apply(platform: Platform) -> None:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer("equal", ["accounts"])
    try:
        while records := consumer.poll(1000, 0.2):
            process_batch(platform, records)
            consumer.commit()
    finally:
        consumer.close()
        intake.close()


def _rows(platform: Platform) -> tuple[list[Any], list[Any]]:
    with platform.warehouse.cursor() as db:
        raw = db.execute('SELECT * FROM raw."accounts" ORDER BY id').fetchall()
        product = db.execute(
            'SELECT customer_id, tier FROM products."customer_orders" ORDER BY customer_id'
        ).fetchall()
    return raw, product


class Debezium:
    """Writes changes to project B's topic the way Debezium's PostgreSQL connector does."""

    def __init__(self, platform: Platform, table: str) -> None:
        self.intake = open_intake(platform.project)
        self.table = table
        # One partition, as Debezium creates topics by default: a truncate (no key) is
        # ordered with every key's changes only within one partition.
        self.intake.log.create_topic(TopicSpec("accounts", 1))

    def _send(self, op: str, key: int | None, before: Any, after: Any) -> None:
        value = {
            "before": before,
            "after": after,
            "source": {
                "connector": "postgresql",
                "schema": "public",
                "table": self.table,
                "ts_ms": int(time.time() * 1000),
                "lsn": 1,
            },
            "op": op,
            "ts_ms": int(time.time() * 1000),
        }
        record_key = None if key is None else json.dumps({"id": key}).encode()
        messages = [Message(record_key, json.dumps(value).encode())]
        if op == "d":
            messages.append(Message(record_key, None))  # the tombstone Debezium adds
        self.intake.log.append("accounts", messages)

    def read(self, row: dict[str, Any]) -> None:
        self._send("r", row["id"], None, row)

    def create(self, row: dict[str, Any]) -> None:
        self._send("c", row["id"], None, row)

    def update(self, row: dict[str, Any]) -> None:
        self._send("u", row["id"], None, row)  # REPLICA IDENTITY DEFAULT: no `before`

    def delete(self, key: int) -> None:
        self._send("d", key, {"id": key, "customer_id": None, "tier": None}, None)

    def truncate(self) -> None:
        self._send("t", None, None, None)

    def close(self) -> None:
        self.intake.close()


def _capture(cdc: PostgresCdc, expected: int) -> None:
    moved, deadline = 0, time.monotonic() + 60
    while moved < expected:
        assert time.monotonic() < deadline, f"captured {moved} of {expected} changes"
        moved += cdc.poll()
        time.sleep(0.05)


@pytest.mark.parametrize("plugin", ["pgoutput", "wal2json"])
def test_native_cdc_and_debezium_give_the_same_rows(
    tmp_path: Path, pg_dsn: str, pg_table: str, plugin: str
) -> None:
    import psycopg

    slot = f"tg_{uuid.uuid4().hex[:12]}"
    native = streamshop.write_stream_project(tmp_path / "native")
    (native / "sources" / "accounts.yml").write_text(
        NATIVE.format(dsn=pg_dsn, table=pg_table, slot=slot, plugin=plugin)
    )
    topic = streamshop.write_stream_project(tmp_path / "debezium")
    accounts = topic / "sources" / "accounts.yml"
    accounts.write_text(accounts.read_text().replace("table: accounts", f"table: {pg_table}"))
    _build(native)
    _build(topic)

    pg = psycopg.connect(pg_dsn, autocommit=True)
    pg.execute(f"CREATE TABLE {pg_table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    first = [(1, 11, "free"), (2, 12, "gold"), (3, 13, "pro")]
    pg.cursor().executemany(f"INSERT INTO {pg_table} VALUES (%s, %s, %s)", first)
    cdc: PostgresCdc | None = None
    with Platform.open(native) as a, Platform.open(topic) as b:
        intake = open_intake(a.project)
        debezium = Debezium(b, pg_table)
        try:
            cdc = PostgresCdc(
                pg_dsn,
                slot,
                intake,
                "accounts",
                pg_table,
                positions=a.meta.cdc_positions,
                plugin=plugin,
            )
            assert cdc.start() == 3
            for row in first:
                debezium.read(dict(zip(("id", "customer_id", "tier"), row, strict=True)))

            pg.execute(f"INSERT INTO {pg_table} VALUES (4, 14, 'free')")
            debezium.create({"id": 4, "customer_id": 14, "tier": "free"})
            pg.execute(f"UPDATE {pg_table} SET tier = 'gold' WHERE id = 1")
            debezium.update({"id": 1, "customer_id": 11, "tier": "gold"})
            pg.execute(f"UPDATE {pg_table} SET customer_id = 15 WHERE id = 3")
            debezium.update({"id": 3, "customer_id": 15, "tier": "pro"})
            pg.execute(f"DELETE FROM {pg_table} WHERE id = 2")
            debezium.delete(2)
            _capture(cdc, 4)
            _apply(a)
            _apply(b)
            raw, product = _rows(a)
            assert raw == [(1, 11, "gold"), (3, 15, "pro"), (4, 14, "free")]
            assert (raw, product) == _rows(b)

            pg.execute(f"TRUNCATE {pg_table}")
            debezium.truncate()
            pg.execute(f"INSERT INTO {pg_table} VALUES (5, 16, 'pro')")
            debezium.create({"id": 5, "customer_id": 16, "tier": "pro"})
            pg.execute(f"UPDATE {pg_table} SET tier = 'gold' WHERE id = 5")
            debezium.update({"id": 5, "customer_id": 16, "tier": "gold"})
            _capture(cdc, 3)
            _apply(a)
            _apply(b)
            raw, product = _rows(a)
            assert raw == [(5, 16, "gold")]
            assert (raw, product) == _rows(b)
            assert dict(product)[16] == "gold"
            assert dict(product)[11] is None
        finally:
            debezium.close()
            intake.close()
            if cdc is not None:
                cdc.drop()
                cdc.close()
            pg.close()
