"""Files dropped into a folder, end to end: the worker loop sweeps the folder, checks
every line, logs the good ones, dead-letters the bad ones with their reason, and the
product shows the orders; a file dropped again (a crash before the move) doubles
nothing; files it does not take are left alone."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tidegate.ingest.deadletters import DeadLetterStore
from tidegate.log.sqlite import SqliteEventLog
from tidegate.platform import Platform
from tidegate.runtime.worker import DEFAULT_GROUP, run_worker
from tidegate.store.online.codec import decode_row

from .conftest import faults  # type: ignore[import-not-found]


def _order(order_id: int, customer: int, amount: float) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": customer, "amount": amount}


def _online(platform: Platform, customer: int) -> dict[str, Any]:
    encoded = platform.online.read("customer_orders", str(customer))
    assert encoded is not None
    types = {c: s.type for c, s in platform.project.products["customer_orders"].columns.items()}
    return decode_row(encoded, types)


def test_dropped_files_reach_the_product_and_bad_lines_the_dead_letters(
    built_stream_project: Path,
) -> None:
    root = built_stream_project
    orders_yml = root / "sources" / "orders.yml"
    orders_yml.write_text(orders_yml.read_text() + "drop_folder: inbox/orders\n")
    inbox = root / "inbox" / "orders"
    inbox.mkdir(parents=True)
    lines = [json.dumps(_order(i, 1, 10.0)) for i in range(1, 6)]
    lines.insert(2, '{"order_id": 99, "customer_id": 1, "amount": ')  # cut short
    (inbox / "a.jsonl").write_text("\n".join(lines) + "\n")
    (inbox / "b.csv").write_text(
        "order_id,customer_id,amount,status\n6,2,5.5,paid\n7,2,lots,paid\n8,2,,paid\n9,2,1.5,\n"
    )
    (inbox / "c.json").write_text(json.dumps([_order(10, 3, 2.0), _order(11, 3, 3.0)]))
    (inbox / "notes.txt").write_text("not an event file\n")
    (inbox / ".partial.jsonl").write_text(json.dumps(_order(50, 4, 1.0)) + "\n")

    with Platform.open(root) as platform:
        platform.online  # noqa: B018  (opened before the worker thread uses it)

        def target(stop: threading.Event) -> None:
            run_worker(platform, stop=stop, on_batch=worker.on_batch)

        worker = faults.WorkerThread(target)
        worker.start()
        try:
            faults.wait_until(
                lambda: (
                    worker.alive()
                    and _online(platform, 1)["order_count"] == 5
                    and _online(platform, 2)["order_count"] == 2
                    and _online(platform, 3)["order_count"] == 2
                ),
                60,
                "the dropped orders in the product",
            )
            assert sorted(p.name for p in (inbox / "done").iterdir()) == [
                "a.jsonl",
                "b.csv",
                "c.json",
            ]
            assert (inbox / "notes.txt").exists()
            assert (inbox / ".partial.jsonl").exists()  # hidden: still being written
            assert _online(platform, 4)["order_count"] == 0

            # The same file again, as after a crash between logging it and moving it.
            (inbox / "a.jsonl").write_text("\n".join(lines) + "\n")
            log = SqliteEventLog(root / ".tidegate" / "log.db")
            try:

                def applied() -> bool:
                    logged = sum(log.end_offsets("orders").values())
                    done = sum(log.committed(DEFAULT_GROUP, "orders").values())
                    return worker.alive() and logged == 9 + 5 and done == logged

                faults.wait_until(applied, 60, "the re-sent file logged and applied")
            finally:
                log.close()
            assert not (inbox / "a.jsonl").exists()
            worker.stop()
            assert _online(platform, 1)["order_count"] == 5
            assert _online(platform, 2)["revenue"] == 7.0
            with platform.warehouse.cursor() as db:
                assert db.execute(
                    'SELECT count(*), count(DISTINCT order_id) FROM raw."orders"'
                ).fetchall() == [(9, 9)]
        finally:
            if worker.thread.is_alive():
                worker.event.set()
                worker.thread.join(60)

    dead = DeadLetterStore(root / ".tidegate" / "metadata.db")
    try:
        letters = sorted((d.via, d.reason) for d in dead.list(limit=100))
    finally:
        dead.close()
    assert [via for via, _ in letters] == [
        "file:a.jsonl",
        "file:a.jsonl",
        "file:b.csv",
        "file:b.csv",
    ]
    reasons = [reason for _, reason in letters]
    # the cut-short line, once per drop: a file dropped twice is submitted twice
    assert reasons[0].startswith("malformed JSON")
    assert reasons[1].startswith("malformed JSON")
    assert "column 'amount'" in reasons[2] + reasons[3]
    assert any("missing required column 'amount'" in r for r in reasons[2:])
