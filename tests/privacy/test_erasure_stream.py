"""Erasure on the streaming path (embedded services): events of an erased subject that
arrive afterwards are dropped by the worker, counted, and never stored (not even as dead
letters); a rebuild from the sources does not bring the subject back; the access package
finds the stream rows first."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tidegate.ingest.intake import open_intake, platform_intake
from tidegate.log.base import Record
from tidegate.meta.sqlite import sqlite_part
from tidegate.platform import Platform
from tidegate.privacy.tombstones import is_erased
from tidegate.requests.subject_access import access
from tidegate.requests.subject_requests import erase
from tidegate.runtime.worker import StreamWorker

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_streamshop_privacy", Path(__file__).parents[1] / "ingest" / "streamshop.py"
)
assert _spec is not None
assert _spec.loader is not None
streamshop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamshop)

GONE = 7
KEPT = 8


@pytest.fixture
def project(tmp_path: Path) -> Path:
    from tidegate.products.builder import build_products, load_sources

    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    return root


def _drain(platform: Platform, topics: list[str]) -> list[Record]:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer("privacy-test", topics)
    records: list[Record] = []
    try:
        while batch := consumer.poll(10_000, 0.2):
            records += batch
    finally:
        consumer.close()
        intake.close()
    return records


def _orders(first: int, customers: list[int]) -> list[dict[str, Any]]:
    return [
        {"order_id": first + i, "customer_id": c, "amount": 10.0, "status": "paid"}
        for i, c in enumerate(customers)
    ]


def _count(platform: Platform, sql: str) -> int:
    with platform.warehouse.cursor() as db:
        row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_events_of_an_erased_subject_are_dropped_not_dead_lettered(project: Path) -> None:
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        intake = worker.intake
        intake.submit("orders", _orders(1, [GONE, GONE, KEPT]), "test")
        first = worker.process_batch(_drain(platform, intake.topics))
        assert (first.applied, first.erased) == (3, 0)
        package = access(platform, str(GONE), "dpo")
        orders = package["warehouse"]["tables"]['raw."orders"']
        assert sorted(o["order_id"] for o in orders) == [1, 2]
        assert package["online_store"]["customer_orders"][0]["order_count"] == 2

        assert worker.erased.none_erased()  # nobody erased yet: the hot path skips checks
        report = erase(platform, str(GONE), "dpo")
        assert report.complete
        worker.erased.refresh()
        assert not worker.erased.none_erased()
        assert is_erased(platform, GONE)
        assert is_erased(platform, str(GONE))
        assert not is_erased(platform, KEPT)
        assert platform.online.read("customer_orders", str(GONE)) is None

        # the platform's intake (HTTP ingest) drops them at the door: never logged
        door = platform_intake(platform)
        dropped = door.submit("orders", _orders(20, [GONE]), "test")
        assert (dropped.accepted, dropped.erased, dropped.rejected) == (1, 1, [])
        answer = dropped.as_json()
        assert (answer["accepted"], answer["rejected"]) == (1, [])
        assert "erased" not in json.dumps(answer)  # who was erased: untold
        door.close()
        # a producer that writes the topic itself has not heard: the worker drops them
        intake = open_intake(platform.project)
        intake.submit("orders", _orders(10, [GONE, KEPT, GONE]), "test")
        intake.submit("clicks", [{"event_id": "c1", "customer_id": GONE, "url": "/x"}], "test")
        intake.close()
        second = worker.process_batch(_drain(platform, intake.topics))
        # skipped: the kept order delivered again (the erased two left the log itself)
        assert (second.skipped, second.applied, second.erased, second.dead) == (1, 1, 3, 0)
        assert (
            _count(platform, f'SELECT count(*) FROM raw."orders" WHERE customer_id = {GONE}') == 0
        )
        assert (
            _count(platform, f'SELECT count(*) FROM raw."clicks" WHERE customer_id = {GONE}') == 0
        )
        assert (
            _count(platform, f'SELECT count(*) FROM raw."orders" WHERE customer_id = {KEPT}') == 2
        )
        assert platform.online.read("customer_orders", str(GONE)) is None
        dead = sqlite_part(platform.project.path(".tidegate/metadata.db"), "dead_letters")
        assert dead.count(include_replayed=True) == 0
        dead.close()
        worker.close()


def test_a_rebuild_from_sources_does_not_resurrect_the_subject(project: Path) -> None:
    from tidegate.products.builder import build_products, load_sources

    with Platform.open(project) as platform:
        assert erase(platform, str(GONE), "dpo").complete
        loaded = load_sources(platform)
        assert loaded["customers"] == 49  # customers.csv upstream still has all 50
        assert all(r.status == "live" for r in build_products(platform))
        for product in ("customer_orders", "top_customers"):
            assert (
                _count(
                    platform,
                    f'SELECT count(*) FROM products."{product}" WHERE customer_id = {GONE}',
                )
                == 0
            )
            assert platform.online.read(product, str(GONE)) is None
            assert platform.online.read(product, str(KEPT)) is not None
        again = erase(platform, str(GONE), "dpo")  # idempotent: nothing left to remove
        assert again.complete
        assert {s.status for s in again.systems if s.system == "warehouse"} == {"none"}
        assert platform.audit.verify() == []


def test_erasure_report_is_an_audit_record_without_the_clear_id(project: Path) -> None:
    with Platform.open(project) as platform:
        report = erase(platform, str(GONE), "dpo", reason=f"request by customer {GONE}")
        records = dict(platform.audit.records())
        record = records[report.audit_seq or 0]
        assert record.action == "erasure"
        body = json.dumps(record.__dict__, default=str)
        assert f'"{GONE}"' not in body
        assert f"customer {GONE}" not in body
        assert record.detail["reason"].startswith("request by customer erased:")
        assert {s["system"] for s in record.detail["systems"]} >= {
            "tombstone", "warehouse", "online_store", "dead_letters", "consent_ledger",
            "sync_state", "audit_log", "event_log", "upstream_source",
        }  # fmt: skip
