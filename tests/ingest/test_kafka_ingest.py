"""Kafka topics as sources: JSON events and Debezium envelopes (with tombstones), end to end."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tidegate.ingest.intake import open_intake
from tidegate.log.base import Message, Record
from tidegate.platform import Platform
from tidegate.runtime.worker import process_batch

pytestmark = pytest.mark.services


def test_json_and_debezium_topics_reach_the_product(
    built_stream_project: Path, kafka_bootstrap: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    root = built_stream_project
    (root / "tidegate.yml").write_text(
        f"name: streamshop\nbackends:\n  log: {{type: kafka, bootstrap: '{kafka_bootstrap}',"
        f" namespace: t{suffix}}}\n"
    )
    for source in ("orders", "accounts"):
        path = root / "sources" / f"{source}.yml"
        path.write_text(path.read_text() + f"topic: {source}-{suffix}\n")
    with Platform.open(root) as platform:
        intake = open_intake(platform.project)
        orders, accounts = f"orders-{suffix}", f"accounts-{suffix}"
        try:
            intake.log.append(
                orders,
                [
                    Message(
                        b"1", json.dumps({"order_id": 1, "customer_id": 1, "amount": 5}).encode()
                    ),
                    Message(
                        b"1", json.dumps({"order_id": 2, "customer_id": 1, "amount": 7}).encode()
                    ),
                    Message(b"2", b'{"order_id": 3, "customer_id": "two", "amount": 1}'),
                ],
            )
            envelope = {
                "schema": {},
                "payload": {
                    "op": "c",
                    "before": None,
                    "after": {"id": 5, "customer_id": 3, "tier": "gold"},
                    "source": {"table": "accounts", "ts_ms": 1700000000000},
                },
            }
            intake.log.append(
                accounts,
                [
                    Message(b'{"id": 5}', json.dumps(envelope).encode()),
                    Message(
                        b'{"id": 6}',
                        json.dumps(
                            {
                                **envelope["payload"],
                                "after": {"id": 6, "customer_id": 4, "tier": "pro"},
                            }
                        ).encode(),
                    ),
                    Message(b'{"id": 6}', None),  # tombstone: account 6 is gone
                ],
            )
            consumer = intake.log.consumer(f"g-{suffix}", [orders, accounts], session_timeout=6)
            records: list[Record] = []
            deadline = time.monotonic() + 60
            while len(records) < 6:
                assert time.monotonic() < deadline, "Kafka did not deliver"
                records += consumer.poll(100, 0.5)
            report = process_batch(platform, records)
            consumer.commit(report.offsets)
            consumer.close()
            assert report.dead == 1
            with platform.warehouse.cursor() as db:
                rows = db.execute(
                    'SELECT customer_id, order_count, revenue, tier FROM products."customer_orders"'
                    " WHERE customer_id IN (1, 3, 4) ORDER BY customer_id"
                ).fetchall()
            assert rows == [(1, 2, 12.0, None), (3, 0, 0.0, "gold"), (4, 0, 0.0, None)]
            assert intake.dead.count("orders") == 1
        finally:
            for topic in (orders, accounts, f"t{suffix}.__changes.customer_orders"):
                intake.log.delete_topic(topic)
            intake.close()
