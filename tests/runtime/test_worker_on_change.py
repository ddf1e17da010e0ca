"""`trigger: on_change` syncs receive a product's changed rows after each micro-batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tidegate.ingest.intake import open_intake
from tidegate.platform import Platform
from tidegate.runtime.worker import StreamWorker


def _crm(path: Path) -> dict[int, tuple[int, float]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT customer_id, order_count, revenue FROM orders_crm").fetchall()
    return {int(c): (int(n), float(r)) for c, n, r in rows}


def _product(platform: Platform) -> dict[int, tuple[int, float]]:
    rows = platform.warehouse.arrow(
        'SELECT customer_id, order_count, revenue FROM products."customer_orders"'
    ).to_pylist()
    return {r["customer_id"]: (r["order_count"], r["revenue"]) for r in rows}


def test_on_change_sync_follows_each_batch(built_stream_project: Path) -> None:
    (built_stream_project / "syncs").mkdir(exist_ok=True)
    (built_stream_project / "syncs" / "orders_crm.yml").write_text(
        "name: orders_crm\nproduct: customer_orders\npurpose: support\n"
        "destination: {type: sqlite, path: crm.db, table: orders_crm}\n"
        "mode: upsert\ntrigger: on_change\n"
        "fields: {customer_id: customer_id, order_count: order_count, revenue: revenue}\n"
    )
    crm = built_stream_project / "crm.db"
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        worker = StreamWorker(platform, intake)
        consumer = intake.log.consumer("on-change-test", intake.topics)
        try:
            for batch, customers in enumerate(((1, 2, 3), (2, 7), (7,))):
                orders = [
                    {"order_id": 1000 * (batch + 1) + i, "customer_id": c, "amount": 10.0 + i}
                    for i, c in enumerate(customers)
                ]
                assert intake.submit("orders", orders, "test").accepted == len(orders)
                records = consumer.poll(1000, 1.0)
                worker.process_batch(records)
                consumer.commit()
                # after every batch the destination equals the product, row for row
                assert _crm(crm) == _product(platform)
        finally:
            consumer.close()
            worker.close()
        assert _crm(crm)[7] == (2, 10.0 + 1 + 10.0)
        runs = platform.meta.runs("sync", "orders_crm", limit=10)
    assert len(runs) == 3
    assert all(r["status"] == "ok" for r in runs)
