"""The stream worker, one micro-batch at a time (no threads): raw, products, online, changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tidegate.ingest.intake import open_intake
from tidegate.log.base import Message, Record
from tidegate.meta.sqlite import sqlite_part
from tidegate.platform import Platform
from tidegate.products.changes import ChangeEncoder
from tidegate.runtime.worker import StreamWorker, process_batch
from tidegate.store.online.codec import decode_row

from .conftest import differences  # type: ignore[import-not-found]


def _drain(platform: Platform, topics: list[str], group: str = "test") -> list[Record]:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer(group, topics)
    records: list[Record] = []
    try:
        while batch := consumer.poll(10_000, 0.2):
            records += batch
    finally:
        consumer.close()
        intake.close()
    return records


def _online(platform: Platform, product: str, key: str) -> dict[str, Any] | None:
    encoded = platform.online.read(product, key)
    types = {c: s.type for c, s in platform.project.products[product].columns.items()}
    return decode_row(encoded, types) if encoded else None


def _debezium(op: str, before: Any, after: Any, table: str = "accounts") -> dict[str, Any]:
    return {"before": before, "after": after, "op": op, "source": {"table": table, "ts_ms": 1}}


def test_a_batch_reaches_raw_products_online_and_the_change_stream(
    built_stream_project: Path,
) -> None:
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        orders = [
            {"order_id": i, "customer_id": 1 + i % 3, "amount": 10.0 * i} for i in range(1, 10)
        ]
        assert intake.submit("orders", orders, "test").accepted == 9
        intake.submit("clicks", [{"event_id": "e1", "customer_id": 4, "url": "/"}], "test")
        intake.log.append(
            "accounts",
            [
                Message(
                    b"1",
                    json.dumps(
                        _debezium("c", None, {"id": 1, "customer_id": 5, "tier": "gold"})
                    ).encode(),
                ),
                Message(
                    b"2",
                    json.dumps(
                        _debezium("r", None, {"id": 2, "customer_id": 6, "tier": "free"})
                    ).encode(),
                ),
                Message(
                    b"2",
                    json.dumps(
                        _debezium("u", {"id": 2}, {"id": 2, "customer_id": 7, "tier": "pro"})
                    ).encode(),
                ),
                Message(
                    b"9",
                    json.dumps(
                        _debezium("c", None, {"id": 9, "customer_id": 8}, table="users")
                    ).encode(),
                ),
                Message(b"1", b"{not json"),
            ],
        )
        records = _drain(platform, intake.topics)
        report = process_batch(platform, records)
        assert report.records == 15
        assert report.dead == 2
        # customers 1-3 (orders), 4 (click), 5 and 7 (accounts); account 2 moved from 6 to 7
        # within the batch, so customer 6 never changed
        assert report.products["customer_orders"] == 6
        assert differences(platform, "customer_orders") == 0
        row = _online(platform, "customer_orders", "2")
        assert row is not None
        assert row["order_count"] == 3
        assert row["revenue"] == 10.0 * (1 + 4 + 7)
        assert _online(platform, "customer_orders", "7")["tier"] == "pro"  # type: ignore[index]
        assert _online(platform, "customer_orders", "6")["tier"] is None  # type: ignore[index]

        changes = [
            json.loads(r.value or b"")
            for p in range(intake.log.partitions("__changes.customer_orders"))
            for r in intake.log.read("__changes.customer_orders", p, 0, 100)
        ]
        # keys only, and the key (the subject's id) pseudonymised: products/changes.py
        encoder = ChangeEncoder(platform.project.products["customer_orders"], platform.master_key)
        assert sorted(c["key"] for c in changes) == sorted(
            encoder.key_text(k) for k in [1, 2, 3, 4, 5, 7]
        )
        assert {tuple(sorted(c)) for c in changes} == {("at", "key", "op", "version")}
        assert {c["version"] for c in changes} == {1}

        dead = sqlite_part(platform.project.path(".tidegate/metadata.db"), "dead_letters")
        reasons = sorted(d.reason for d in dead.list())
        dead.close()
        assert reasons[0].startswith("Debezium event for unknown table 'users'")
        assert reasons[1].startswith("malformed JSON")

        # The same records again (a redelivery): nothing is applied twice.
        again = process_batch(platform, records)
        assert again.skipped == 15
        assert again.products == {}
        with platform.warehouse.cursor() as db:
            assert db.execute('SELECT count(*) FROM raw."orders"').fetchone() == (9,)
        dead = sqlite_part(platform.project.path(".tidegate/metadata.db"), "dead_letters")
        assert dead.count() == 2
        dead.close()
        intake.close()


def test_deletes_and_tombstones_remove_rows(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        create = _debezium("c", None, {"id": 1, "customer_id": 3, "tier": "gold"})
        create2 = _debezium("c", None, {"id": 2, "customer_id": 4, "tier": "gold"})
        intake.log.append(
            "accounts",
            [
                Message(b"1", json.dumps(create).encode()),
                Message(b"2", json.dumps(create2).encode()),
            ],
        )
        process_batch(platform, _drain(platform, ["accounts"], "g1"))
        assert _online(platform, "customer_orders", "3")["tier"] == "gold"  # type: ignore[index]
        delete = _debezium("d", {"id": 1}, None)
        intake.log.append(
            "accounts",
            [Message(b"1", json.dumps(delete).encode()), Message(b'{"id": 2}', None)],
        )
        report = process_batch(platform, _drain(platform, ["accounts"], "g1"))
        assert report.dead == 0
        with platform.warehouse.cursor() as db:
            assert db.execute('SELECT count(*) FROM raw."accounts"').fetchone() == (0,)
        assert _online(platform, "customer_orders", "3")["tier"] is None  # type: ignore[index]
        assert _online(platform, "customer_orders", "4")["tier"] is None  # type: ignore[index]
        assert differences(platform, "customer_orders") == 0
        intake.close()


def test_keys_applied_but_not_published_are_published_on_recovery(
    built_stream_project: Path,
) -> None:
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        intake.submit("orders", [{"order_id": 1, "customer_id": 9, "amount": 5.0}], "test")
        worker = StreamWorker(platform)
        worker._publish = lambda deltas, oldest: None  # type: ignore[method-assign]  # "dies"
        worker.process_batch(_drain(platform, ["orders"]))
        assert _online(platform, "customer_orders", "9")["order_count"] == 0  # type: ignore[index]
        worker.close()
        restarted = StreamWorker(platform)
        assert restarted.recover() == 1
        assert _online(platform, "customer_orders", "9")["order_count"] == 1  # type: ignore[index]
        assert restarted.recover() == 0
        restarted.close()
        intake.close()


def _offsets(platform: Platform) -> dict[tuple[str, int], int]:
    with platform.warehouse.cursor() as db:
        rows = db.execute("SELECT * FROM tidegate_state.applied_offsets").fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def test_applied_offsets_follow_every_batch_even_when_a_row_went_missing(
    built_stream_project: Path,
) -> None:
    """The next offset per partition is updated in place once known, inserted when new,
    and written again whole when a row the worker knew is gone: a restart then skips
    exactly what was applied."""
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        worker = StreamWorker(platform)
        seen: dict[tuple[str, int], int] = {}
        for first in (1, 20, 40):
            orders = [
                {"order_id": first + i, "customer_id": 1 + i % 5, "amount": 1.0} for i in range(9)
            ]
            intake.submit("orders", orders, "test")
            records = _drain(platform, ["orders"], f"offsets-{first}")
            fresh = [r for r in records if r.offset >= seen.get((r.topic, r.partition), 0)]
            for record in fresh:
                tp = (record.topic, record.partition)
                seen[tp] = max(seen.get(tp, 0), record.offset + 1)
            worker.process_batch(records)
            assert _offsets(platform) == seen
            if first == 20:  # behind the worker's back: the UPDATE finds fewer rows
                with platform.warehouse.cursor() as db:
                    db.execute("DELETE FROM tidegate_state.applied_offsets")
        worker.close()
        restarted = StreamWorker(platform)
        again = restarted.process_batch(_drain(platform, ["orders"], "offsets-again"))
        assert (again.skipped, again.applied) == (sum(seen.values()), 0)
        restarted.close()
        intake.close()
