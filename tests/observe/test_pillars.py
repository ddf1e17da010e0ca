"""The pillars measured on real DuckDB tables, and stored per build."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tidegate.observe.pillars import measure
from tidegate.observe.timeseries import ObserveStore
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources

from .conftest import BAD_CUSTOMERS


def test_measure_volume_distribution_freshness_and_schema_change() -> None:
    db = duckdb.connect()
    db.execute(
        "CREATE TABLE v1 AS SELECT * FROM (VALUES (1, 'ab', 10.0, TIMESTAMP '2026-01-01 00:00'),"
        " (2, NULL, 20.0, TIMESTAMP '2026-01-02 00:00'), (3, 'abcd', 30.0, NULL)) t(id, s, x, ts)"
    )
    first = measure(db, "p", 1, "v1", key="id", at=1_767_400_000.0)
    assert first.value("volume.rows") == 3
    assert first.value("null_percent", "s") == pytest.approx(100 / 3)
    assert (first.value("min", "x"), first.value("max", "x"), first.value("mean", "x")) == (
        10.0,
        30.0,
        20.0,
    )
    assert first.value("stddev", "x") == pytest.approx(10.0)
    assert (first.value("length_min", "s"), first.value("length_max", "s")) == (2.0, 4.0)
    assert first.value("distinct_count", "id") == 3
    newest = first.value("max", "ts")
    assert newest is not None
    assert first.value("freshness.event_lag_s") == pytest.approx(1_767_400_000.0 - newest)
    assert first.schema_change is None

    # v2: one row changed, one removed, one added; x retyped, s removed, y added
    db.execute(
        "CREATE TABLE v2 AS SELECT * FROM (VALUES (1, '10', TIMESTAMP '2026-01-01 00:00', 1),"
        " (2, '21', TIMESTAMP '2026-01-02 00:00', 2), (4, '40', NULL, 3)) t(id, x, ts, y)"
    )
    second = measure(
        db,
        "p",
        2,
        "v2",
        key="id",
        at=1_767_403_600.0,
        previous_relation="v1",
        previous_schema=first.schema,
        previous_built_at=1_767_400_000.0,
        slo_seconds=1800,
    )
    change = second.schema_change
    assert change is not None
    assert (change.added, change.removed) == (["y"], ["s"])
    assert change.retyped == {"x": ("DECIMAL(3,1)", "VARCHAR")}
    assert second.schema.fingerprint != first.schema.fingerprint
    assert second.value("volume.rows_removed") == 1  # id 3
    assert second.value("volume.rows_changed") is None  # schemas differ: not comparable
    assert second.value("freshness.since_update_s") == 3600
    assert second.value("freshness.breach") == 1.0


def test_every_build_stores_its_pillars(small_project: Path) -> None:
    with Platform.open(small_project) as platform:
        load_sources(platform)
        build_products(platform)
        (small_project / "data" / "customers.csv").write_text(
            BAD_CUSTOMERS + "6,new@example.com,GB,2024-06-01\n"
        )
        load_sources(platform)
        build_products(platform)
    with ObserveStore(small_project / ".tidegate" / "metadata.db") as store:
        rows = store.series("customer_profile", "volume.rows")
        assert [(p.version, p.value) for p in rows] == [(1, 5.0), (2, 6.0)]
        changed = store.series("customer_profile", "volume.rows_changed")
        assert [p.value for p in changed] == [1.0]
        names = set(store.series_names("customer_profile"))
        assert {
            ("null_percent", "email"),
            ("length_mean", "email"),
            ("mean", "tenure_days"),
        } <= names
        assert {("freshness.since_update_s", ""), ("schema.columns", "")} <= names
        schema = store.last_schema("customer_profile")
        assert schema is not None
        assert schema.columns == {
            "customer_id": "BIGINT",
            "email": "VARCHAR",
            "country": "VARCHAR",
            "tenure_days": "BIGINT",
        }
