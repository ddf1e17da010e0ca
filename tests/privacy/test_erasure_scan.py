"""Erasure reaches everything and stays done (issue 12, item 2).

On the demo shop, extended with a stream source, a product over it, the consent topic and
a quality check that fails on the subject, one distinctive person is put in every store:
raw and build tables, products, a quality failing-row table, the online store, sync
destinations, the event log (source, consent and change-stream topics), dead letters
(one whose subject field does not parse), the consent ledger, the audit log and the
observations. After `tidegate request erase` a scan of every store, by its rows and by
the raw bytes of its files, finds neither their id nor their email; then every kind of
rebuild, replay and sync runs and the scan is repeated."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tidegate.cli.app import app
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_erasure_world", Path(__file__).parent / "erasure_world.py"
)
assert _spec is not None
assert _spec.loader is not None
world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(world)

SUBJECT, EMAIL, OTHER = world.SUBJECT, world.EMAIL, world.OTHER


def erase_by_cli(shop: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["request", "erase", SUBJECT, "--project", str(shop), "--yes", "--json",
              "--principal", "dpo"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert SUBJECT not in result.output
    assert EMAIL not in result.output
    report: dict[str, Any] = json.loads(result.output)
    assert report["complete"] is True, report
    return report


def scan_embedded(shop: Path) -> list[str]:
    with Platform.open(shop) as platform:
        found = world.scan_duckdb_rows(platform)
        found += world.scan_log(platform)
        found += world.scan_metadata(platform)
    for path in sorted(shop.rglob("*.db")):
        found += world.scan_sqlite_rows(path)
    found += world.scan_file_bytes(shop)
    return found


def every_rebuild_replay_and_sync(shop: Path) -> None:
    """Each way the subject could come back: a source reload and rebuild, a scheduled
    rebuild, new events (incremental update, on the stream path), a dead-letter replay,
    a replay of the whole log by a new consumer group, and full syncs."""
    from tidegate.ingest.intake import replay
    from tidegate.products.builder import build_products, load_sources
    from tidegate.runtime.worker import StreamWorker

    with Platform.open(shop) as platform:
        assert load_sources(platform)["customers"] > 0  # upstream still has the subject
        assert all(r.status == "live" for r in build_products(platform))
        assert all(r.status == "live" for r in build_products(platform, principal="scheduler"))
        worker = StreamWorker(platform)
        try:
            worker.intake.submit(
                "chats",
                [world.chat(10, int(SUBJECT), EMAIL), world.chat(11, int(OTHER), None)],
                "test",
            )
            world.drain(worker)
            letters = platform.meta.dead_letters.list(limit=1000, include_replayed=True)
            replay(worker.intake, letters)
            world.drain(worker)
            world.drain(worker, group="a-new-group-replays-everything")
        finally:
            worker.close()
        for name in platform.project.syncs:
            run_sync(platform, name, full=True)
        assert platform.online.read("chat_counts", SUBJECT) is None
        assert platform.online.read("chat_counts", OTHER) is not None


def test_embedded_erasure_leaves_no_trace_and_nothing_brings_it_back(demo_copy: Path) -> None:
    shop = demo_copy
    world.extend_shop(shop)
    with Platform.open(shop) as platform:
        world.populate(platform, ("crm_audience",))
        with platform.warehouse.cursor() as cur:
            cur.execute("CHECKPOINT")
    before = scan_embedded(shop)
    for where in ("duckdb raw.customers", "duckdb quality.", "log chats", "log consent_choices",
                  "log __changes.chat_counts", "dead letter", "crm.db", "online.db",
                  "warehouse.duckdb (bytes)", "log.db (bytes)"):  # fmt: skip
        assert any(where in trace for trace in before), (where, before)

    report = erase_by_cli(shop)
    traces = scan_embedded(shop)
    assert traces == [], "\n".join(traces)
    statuses = {(s["system"], s["status"]) for s in report["systems"]}
    assert ("event_log", "removed") in statuses, statuses
    assert ("quality_rows", "removed") in statuses, statuses
    assert sum(s["removed"] for s in report["systems"] if s["system"] == "dead_letters") == 2
    every_rebuild_replay_and_sync(shop)
    traces = scan_embedded(shop)
    assert traces == [], "\n".join(traces)


def test_observations_never_hold_min_or_max_of_classified_columns(demo_copy: Path) -> None:
    from tidegate.products.builder import build_products

    with Platform.open(demo_copy) as platform:
        assert all(r.status == "live" for r in build_products(platform))
        spec = platform.project.products["customer_360"]
        classified = {c for c, s in spec.columns.items() if s.classification}
        metrics = set(platform.meta.observations.series_names("customer_360"))
    assert ("max", "lifetime_value") in metrics  # unclassified columns keep their statistics
    leaked = {(m, c) for m, c in metrics if c in classified and m in {"min", "max"}}
    assert leaked == set()
