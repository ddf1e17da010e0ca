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
import uuid
from pathlib import Path
from typing import Any

import pytest
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


def every_rebuild_replay_and_sync(shop: Path, group: str = "erasure-scan") -> None:
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
            world.drain(worker, group)
            letters = platform.meta.dead_letters.list(limit=1000, include_replayed=True)
            replay(worker.intake, letters)
            world.drain(worker, group)
            world.drain(worker, group=f"{group}-new-group-replays-everything")
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
    # the change stream holds keys only, the subject's id pseudonymised (issue 13 item 1):
    # nothing of the subject there even before the erasure
    assert not any("log __changes." in trace for trace in before), before
    for where in ("duckdb raw.customers", "duckdb quality.", "log chats", "log consent_choices",
                  "dead letter", "crm.db", "online.db",
                  "metadata.db:sync_row_errors",
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
        classified = {c for c, s in spec.columns.items() if s.category}  # `none` is not
        metrics = set(platform.meta.observations.series_names("customer_360"))
    assert ("max", "lifetime_value") in metrics  # unclassified columns keep their statistics
    leaked = {(m, c) for m, c in metrics if c in classified and m in {"min", "max"}}
    assert leaked == set()


# ---------------------------------------------------------------- with services

_helpers = importlib.util.spec_from_file_location(
    "tidegate_tests_control_helpers_erasure",
    Path(__file__).parents[1] / "runtime" / "control_helpers.py",
)
assert _helpers is not None
assert _helpers.loader is not None
control = importlib.util.module_from_spec(_helpers)
_helpers.loader.exec_module(control)


def scan_postgres(dsn: str, table: str) -> list[str]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
    assert rows  # the others are still there
    return [f"postgres {r}" for r in rows if world.traces_in_text(str(r))]


def scan_redis(url: str, prefix: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(url)
    found = []
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        assert keys
        for key in keys:
            value = client.get(key) if client.type(key) == b"string" else client.hgetall(key)
            text = f"{key!r} {value!r}"
            if world.traces_in_text(text):
                found.append(f"redis {text[:160]}")
    finally:
        client.close()
    return found


def kafka_destination(bootstrap: str, topic: str) -> tuple[list[str], list[str]]:
    """(traces in the topic's latest state, traces in any record it still holds)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from tidegate.egress.destinations.kafka.client import KafkaDestination

    destination = KafkaDestination(bootstrap, topic)
    latest = [f"kafka state {r}" for r in destination.read_all() if world.traces_in_text(str(r))]
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"scan-{uuid.uuid4().hex[:8]}",
         "enable.auto.commit": False}
    )  # fmt: skip
    held = []
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, e in ends.items() if e])
        seen = 0
        while seen < sum(ends.values()):
            message = consumer.poll(10.0)
            assert message is not None, f"reading {topic} timed out"
            if message.error():
                continue
            seen += 1
            text = f"{message.key()!r} {message.value()!r}"
            if world.traces_in_text(text):
                held.append(f"kafka record {message.offset()}")
    finally:
        consumer.close()
    return latest, held


@pytest.mark.services
def test_erasure_with_services_while_the_runtime_runs(
    demo_copy: Path,
    pg_dsn: str,
    pg_table: str,
    redis_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka as the event log and as a destination, PostgreSQL as a destination, Redis
    as the online store; the erasure is answered by a running `tidegate run`."""
    import redis

    suffix = f"_{uuid.uuid4().hex[:8]}"
    prefix = f"tgerase{suffix}"
    kafka_topic = f"erasure.audience{suffix}"
    monkeypatch.setenv("T_PG", pg_dsn)
    shop = demo_copy
    world.extend_shop(
        shop,
        backends=f"  log: {{type: kafka, bootstrap: '{kafka_bootstrap}', partitions: 1,"
        f" namespace: t{suffix}}}\n"
        f"  online: {{type: redis, url: '{redis_url}', prefix: {prefix}}}\n",
        syncs={
            "to_pg": f"{{type: postgres, dsn_env: T_PG, table: {pg_table}}}",
            "to_kafka": f"{{type: kafka, bootstrap: '{kafka_bootstrap}', topic: {kafka_topic}}}",
        },
        suffix=suffix,
    )
    try:
        with Platform.open(shop) as platform:
            world.populate(platform, ("crm_audience", "to_pg", "to_kafka"), f"scan{suffix}")
        assert scan_postgres(pg_dsn, pg_table)
        assert scan_redis(redis_url, prefix)
        assert kafka_destination(kafka_bootstrap, kafka_topic)[0]

        with control.running(shop):
            erased = control.cli(
                "request", "erase", SUBJECT, "--yes", "--json", "-p", str(shop), timeout=300
            )
            assert erased.returncode == 0, erased.stdout + erased.stderr
            report = json.loads(erased.stdout)
            unfinished = [s for s in report["systems"] if s["status"] in ("failed", "pending")]
            assert unfinished == [], unfinished
            assert report["complete"] is True, report
            # the DuckDB file's bytes, read while the runtime holds it
            assert world.scan_file_bytes(shop) == []
        assert SUBJECT not in erased.stdout
        assert EMAIL not in erased.stdout

        systems = report["systems"]
        retained_topics = {
            s["location"].split("topic ", 1)[1]
            for s in systems
            if s["system"] == "event_log" and s["status"] == "retained"
        }
        for s in systems:
            if s["system"] == "event_log":
                assert s["status"] in ("retained", "none"), s
                assert s["status"] == "none" or "retention.ms=" in s["note"], s
        history = [s for s in systems if s["system"] == "destination_history"]
        assert [h["location"].split(" ")[1] for h in history] == ["to_kafka"]
        for setting in ("segment.ms=", "min.compaction.lag.ms=", "delete.retention.ms="):
            assert setting in history[0]["note"], history[0]

        def scan() -> list[str]:
            with Platform.open(shop) as platform:
                found = world.scan_duckdb_rows(platform)
                found += world.scan_metadata(platform)
                logged = world.scan_log(platform)
            # Kafka keeps logged records until retention: true only where reported so
            found += [t for t in logged if world.topic_of(t) not in retained_topics]
            for path in sorted(shop.rglob("*.db")):
                found += world.scan_sqlite_rows(path)
            found += world.scan_file_bytes(shop)
            found += scan_postgres(pg_dsn, pg_table)
            found += scan_redis(redis_url, prefix)
            latest, held = kafka_destination(kafka_bootstrap, kafka_topic)
            assert held  # the compacted topic still holds the record: reported retained
            return found + latest

        assert scan() == []
        every_rebuild_replay_and_sync(shop, group=f"again{suffix}")
        assert scan() == []
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
