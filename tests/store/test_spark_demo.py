"""The demo shop built on Spark (`store: spark`, local mode) equals the DuckDB build.

Acceptance of issue 17 item 1: every product row for row, every guarded read (the
DuckDB face over Spark's Parquet, and the guard's Spark face run by Spark itself), and
what the online store serves, published from Spark's partitions in parallel (to Redis,
and to a SQLite file in local mode). The Spark copy starts from the DuckDB demo's
folder, so both share the master key (same pseudonyms) and the consent ledger.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.platform import Platform
from tidegate.privacy.guard import AccessContext, guard_of
from tidegate.store.warehouse import OnlinePublish

pytestmark = [pytest.mark.services, pytest.mark.slow]

PRODUCTS = ("customer_360", "churn_risk", "marketing_audience")
PURPOSES = ("support", "marketing.email", "analytics")
SPARK_STORE = 'store: {type: spark, master: "local[2]", warehouse: .tidegate/spark}'


REDIS_URL = os.environ.get("TIDEGATE_REDIS_URL", "redis://127.0.0.1:6379/0")


def _spark_copy(demo_dir: Path, parent: Path, online: str) -> Path:
    """The DuckDB demo copied to `parent`, with `store: spark` and the `online:` line
    given (the copied online file holds the DuckDB build's values until rebuilt)."""
    target = parent / "shop"
    shutil.copytree(demo_dir, target)
    config = target / "tidegate.yml"
    text, count = re.subn(r"store: \{type: duckdb[^}]*\}", SPARK_STORE, config.read_text())
    assert count == 1
    text, count = re.subn(r"online: \{[^}]*\}", online, text)
    assert count == 1
    config.write_text(text)
    return target


def _build_on_spark(target: Path) -> dict[str, OnlinePublish]:
    """Load and build every product of the project at `target`; return how each
    product's online publish went (the warehouse's own report)."""
    from tidegate.products.builder import build_products, load_sources
    from tidegate.store.spark.warehouse import SparkWarehouse

    published: dict[str, OnlinePublish] = {}
    real = SparkWarehouse.publish_online

    def noting(self: SparkWarehouse, product: str, *args: Any) -> OnlinePublish:
        done = real(self, product, *args)
        published[product] = done
        return done

    with pytest.MonkeyPatch.context() as patch, Platform.open(target) as platform:
        patch.setattr(SparkWarehouse, "publish_online", noting)
        assert platform.warehouse.engine == "spark"
        load_sources(platform)
        results = build_products(platform)
    assert [r.status for r in results] == ["live"] * len(results), results
    assert {r.product: r.rows for r in results} == {p: d.rows for p, d in published.items()}
    return published


@pytest.fixture(scope="module")
def spark_build(
    demo_dir: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, OnlinePublish]]]:
    """The built DuckDB demo copied, switched to `store: spark` and a Redis online store
    (a prefix of its own), sources reloaded and every product rebuilt on Spark."""
    import redis

    prefix = f"tgspark{uuid.uuid4().hex[:8]}"
    online = f'online: {{type: redis, url: "{REDIS_URL}", prefix: {prefix}}}'
    target = _spark_copy(demo_dir, tmp_path_factory.mktemp("spark"), online)
    yield target, _build_on_spark(target)
    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(match=f"{prefix}:*", count=1_000):
        client.delete(name)
    client.close()


@pytest.fixture(scope="module")
def spark_demo(spark_build: tuple[Path, dict[str, OnlinePublish]]) -> Path:
    return spark_build[0]


@pytest.fixture(scope="module")
def both(demo_dir: Path, spark_demo: Path) -> Iterator[tuple[Platform, Platform]]:
    with Platform.open(demo_dir) as duck, Platform.open(spark_demo) as spark_platform:
        yield duck, spark_platform


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _rows(table: Any, key: str) -> list[tuple[Any, ...]]:
    rows = table.to_pylist()
    return sorted(
        (tuple(_canonical(v) for v in row.values()) for row in rows),
        key=lambda r: repr(r[list(rows[0]).index(key)]) if rows else "",
    )


@pytest.mark.parametrize("product", PRODUCTS)
def test_product_equals_duckdb_build_row_for_row(
    both: tuple[Platform, Platform], product: str
) -> None:
    duck, spark_platform = both
    key = duck.project.products[product].config.key
    query = f'SELECT * FROM products."{product}" ORDER BY "{key}"'
    expected = duck.warehouse.arrow(query)
    got = spark_platform.warehouse.arrow(query)
    assert got.schema == expected.schema
    assert expected.num_rows > 0
    assert got.to_pylist() == expected.to_pylist()


@pytest.mark.parametrize("product", PRODUCTS)
def test_spark_reads_its_own_tables_the_same(both: tuple[Platform, Platform], product: str) -> None:
    """Spark reading the Parquet it wrote sees the same rows the catalog shows (the
    catalog's views add casts only)."""
    from tidegate.store.warehouse import PRODUCTS as SCHEMA

    duck, spark_platform = both
    key = duck.project.products[product].config.key
    frame = spark_platform.warehouse.frame(SCHEMA, product)  # type: ignore[attr-defined]
    from_spark = frame.orderBy(key).toArrow().to_pylist()
    expected = duck.warehouse.arrow(f'SELECT * FROM products."{product}" ORDER BY "{key}"')
    assert from_spark == expected.to_pylist()


def _plans(platform: Platform) -> Iterator[tuple[str, str, Any]]:
    guard = guard_of(platform)
    for product in PRODUCTS:
        allowed = platform.project.products[product].config.purposes
        for purpose in PURPOSES:
            if purpose in allowed:
                context = AccessContext("test", ("privacy_officer",), purpose)
                yield product, purpose, guard.plan(context, product)


def test_guarded_reads_equal_duckdb(both: tuple[Platform, Platform]) -> None:
    """What exports and syncs read (the guard's SQL face over the product) is the same
    on the Spark-built tables, for every product and purpose."""
    from tidegate.egress.export import guarded_rows

    duck, spark_platform = both
    spark_plans = {(p, u): plan for p, u, plan in _plans(spark_platform)}
    checked = 0
    for product, purpose, plan in _plans(duck):
        key = plan.key_column
        expected = sorted(guarded_rows(duck, plan), key=lambda r: repr(r.get(key)))
        got = sorted(
            guarded_rows(spark_platform, spark_plans[(product, purpose)]),
            key=lambda r: repr(r.get(key)),
        )
        assert got == expected, (product, purpose)
        checked += 1
    assert checked == 7


def test_guard_spark_face_equals_duckdb(both: tuple[Platform, Platform], spark: Any) -> None:
    """The guard's Spark face (row filter + treatments as Spark SQL, run by Spark on the
    Spark-built product) gives the DuckDB guard's rows exactly."""
    from tidegate.egress.export import SUBJECT_MARKER, guarded_rows
    from tidegate.privacy.guard_spark import apply_plan
    from tidegate.store.warehouse import PRODUCTS as SCHEMA

    duck, spark_platform = both
    for product, purpose, plan in _plans(duck):
        key = plan.key_column
        frame = spark_platform.warehouse.frame(SCHEMA, product)  # type: ignore[attr-defined]
        got = apply_plan(spark, plan, frame).toArrow().to_pylist()
        expected = [
            {k: v for k, v in row.items() if k != SUBJECT_MARKER}
            for row in guarded_rows(duck, plan)
        ]
        assert len(got) == len(expected), (product, purpose)
        if key in plan.treatments() and plan.treatments()[key] in ("clear",):
            got.sort(key=lambda r: repr(r[key]))
            expected.sort(key=lambda r: repr(r[key]))
        else:
            got.sort(key=repr)
            expected.sort(key=repr)
        assert got == expected, (product, purpose)


def _same_online_values(duck: Platform, other: Platform) -> None:
    for product in PRODUCTS:
        keys = duck.online.keys(product)
        assert keys
        assert sorted(other.online.keys(product)) == sorted(keys)
        assert other.online.read_many(product, keys) == duck.online.read_many(product, keys)


def test_online_store_serves_the_same_values(both: tuple[Platform, Platform]) -> None:
    """Published to Redis from Spark's partitions, the online store holds the same
    encoded rows, key for key, as the DuckDB build published."""
    duck, spark_platform = both
    assert spark_platform.online.kind == "redis"
    _same_online_values(duck, spark_platform)


def test_every_product_was_published_from_several_partitions(
    spark_build: tuple[Path, dict[str, OnlinePublish]],
) -> None:
    _, published = spark_build
    assert set(published) == set(PRODUCTS)
    for product, done in published.items():
        assert done.where == "executors", product
        assert done.partitions > 1, (product, done)
        assert done.rows > 0, product


def test_a_store_executors_cannot_write_gets_the_rows_through_the_driver(
    both: tuple[Platform, Platform], tmp_path: Path
) -> None:
    """The fallback (a SQLite file with a cluster's executors, or a store that takes one
    writer): the same rows, written from the driver."""
    import dataclasses

    from tidegate.store.online.sqlite_store import SqliteOnlineStore

    duck, spark_platform = both
    product = "churn_risk"
    live = spark_platform.meta.live_version(product)
    assert live is not None
    store = SqliteOnlineStore(tmp_path / "elsewhere.db")
    try:
        spec = dataclasses.replace(store.writer_spec(), shared=False)
        key = duck.project.products[product].config.key
        done = spark_platform.warehouse.publish_online(product, live.version, key, spec)
        assert (done.where, done.partitions) == ("driver", 1)
        store.activate(product, live.version)
        keys = duck.online.keys(product)
        assert done.rows == len(keys)
        assert store.read_many(product, keys) == duck.online.read_many(product, keys)
    finally:
        store.close()


@pytest.fixture(scope="module")
def spark_sqlite_demo(
    demo_dir: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, OnlinePublish]]:
    """The demo built on Spark once more, publishing to its SQLite online store (the
    file the DuckDB build wrote): local mode lets the executors, processes of this
    host, write the file together."""
    online = "online: {type: sqlite, path: .tidegate/online.db}"
    target = _spark_copy(demo_dir, tmp_path_factory.mktemp("spark-sqlite"), online)
    return target, _build_on_spark(target)


def test_sqlite_online_store_is_written_from_partitions_too(
    demo_dir: Path, spark_sqlite_demo: tuple[Path, dict[str, OnlinePublish]]
) -> None:
    target, published = spark_sqlite_demo
    for product, done in published.items():
        assert done.where == "executors", product
        assert done.partitions > 1, (product, done)
    with Platform.open(demo_dir) as duck, Platform.open(target) as spark_platform:
        assert spark_platform.online.kind == "sqlite"
        _same_online_values(duck, spark_platform)


def test_a_failing_partition_fails_the_build_and_the_old_version_stays(
    spark_sqlite_demo: tuple[Path, dict[str, OnlinePublish]],
) -> None:
    """One partition's writes are refused by the store (a trigger aborts the insert of
    one key of the next version): the Spark job fails, so does the build, and readers
    keep the previous version in the online store, the warehouse and the metadata;
    the rows other partitions wrote under the failed version are discarded."""
    from tidegate.products.builder import build_products

    target, _ = spark_sqlite_demo
    product = "churn_risk"
    online_db = target / ".tidegate/online.db"
    with Platform.open(target) as platform:
        before = platform.meta.live_version(product)
        assert before is not None
        keys = sorted(platform.online.keys(product))
        served = platform.online.read_many(product, keys)
        rows = platform.warehouse.count(f'products."{product}"')
        victim = keys[len(keys) // 2]
        with sqlite3.connect(online_db) as db:
            db.execute(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON entities"
                f" WHEN NEW.product = '{product}' AND NEW.version > {before.version}"
                f" AND NEW.key = '{victim}' BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
            )
        try:
            results = build_products(platform, [product])
        finally:
            with sqlite3.connect(online_db) as db:
                db.execute("DROP TRIGGER refuse_one")
        assert results[0].status == "failed"
        assert "publishing to the online store failed" in results[0].error
        assert {r.status for r in results[1:]} <= {"skipped"}
        after = platform.meta.live_version(product)
        assert after is not None
        assert after.version == before.version
        assert platform.online.current_version(product) == before.version
        assert platform.online.read_many(product, keys) == served
        assert platform.warehouse.count(f'products."{product}"') == rows
    with sqlite3.connect(online_db) as db:
        left = db.execute(
            "SELECT count(*) FROM entities WHERE product = ? AND version > ?",
            (product, before.version),
        ).fetchone()
    assert left == (0,)  # what the other partitions wrote went with the failed version


def test_rebuild_keeps_two_versions_and_drops_older_parquet(spark_demo: Path) -> None:
    from tidegate.products.builder import build_products

    with Platform.open(spark_demo) as platform:
        for _ in range(2):
            results = build_products(platform, ["marketing_audience"])
            assert results[0].status == "live"
        live = results[0].version
        assert live is not None
    builds = sorted(p.name for p in (spark_demo / ".tidegate/spark/builds").iterdir())
    audience = [b for b in builds if b.startswith("marketing_audience__v")]
    assert audience == [f"marketing_audience__v{live - 1}", f"marketing_audience__v{live}"]


def test_duplicate_keys_fail_on_spark_and_previous_version_stays(spark_demo: Path) -> None:
    """The key check runs on Spark: a build whose key repeats is not published, its
    Parquet directory goes, and the previous version keeps serving."""
    from tidegate.products.builder import build_products

    sql = spark_demo / "products" / "marketing_audience.sql"
    original = sql.read_text()
    twice = "CROSS JOIN (SELECT 1 AS n UNION ALL SELECT 2 AS n) AS twice\nWHERE r.risk_band"
    assert "WHERE r.risk_band" in original
    sql.write_text(original.replace("WHERE r.risk_band", twice))
    try:
        with Platform.open(spark_demo) as platform:
            before = platform.meta.live_version("marketing_audience")
            results = build_products(platform, ["marketing_audience"])
            assert results[0].status == "failed"
            assert "must be unique" in results[0].error
            assert "Traceback" not in results[0].error
            after = platform.meta.live_version("marketing_audience")
            assert after is not None
            assert before is not None
            assert after.version == before.version
            rows = platform.warehouse.count('products."marketing_audience"')
            assert rows == before.rows
        version = results[0].version
        failed = spark_demo / ".tidegate/spark/builds" / f"marketing_audience__v{version}"
        assert not failed.exists()
    finally:
        sql.write_text(original)


def _crm_rows(directory: Path) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(directory / "crm.db") as db:
        return sorted(db.execute("SELECT * FROM audience").fetchall(), key=repr)


def test_sync_from_spark_tables_equals_duckdb(demo_copy: Path, spark_demo: Path) -> None:
    """The CRM sync (guarded, marketing.email) reads the Spark-built tables and writes
    the CRM exactly as the DuckDB build's sync does."""
    from tidegate.egress.sync import run_sync

    for directory in (demo_copy, spark_demo):
        (directory / "crm.db").unlink(missing_ok=True)
        with Platform.open(directory) as platform:
            report = run_sync(platform, "crm_audience", full=True)
            assert report.status == "ok", report
    expected = _crm_rows(demo_copy)
    assert expected
    assert _crm_rows(spark_demo) == expected


def test_erasure_rewrites_the_parquet_without_the_subject(spark_demo: Path) -> None:
    """Runs last (it erases a customer from the shared Spark demo). Parquet has no
    DELETE: the raw snapshot and the live version are written again without the
    subject's rows, the catalog flips, the old files go."""
    import time

    import duckdb

    from tidegate.privacy.tombstones import ensure_purged, erasure_store, tombstones_of

    with Platform.open(spark_demo) as platform:
        subject = str(
            platform.warehouse.arrow('SELECT min(customer_id) AS c FROM products."customer_360"')
            .column("c")[0]
            .as_py()
        )
        where = f"WHERE CAST(customer_id AS VARCHAR) = '{subject}'"
        before = platform.warehouse.count('products."customer_360"')
        assert platform.warehouse.count(f'raw."customers" {where}') == 1
        tombstones = tombstones_of(platform)
        erasure_store(platform.meta).add_tombstone(tombstones.hash(subject), time.time(), "t")
        assert ensure_purged(platform) >= 2
        assert platform.warehouse.count(f'raw."customers" {where}') == 0
        assert platform.warehouse.count(f'products."customer_360" {where}') == 0
        assert platform.warehouse.count('products."customer_360"') == before - 1
        assert platform.online.read("customer_360", subject) is None
        live = platform.meta.live_version("customer_360")
        assert live is not None
    spark_dir = spark_demo / ".tidegate/spark"
    assert len(list((spark_dir / "raw/customers").iterdir())) == 1  # the old snapshot went
    for pattern in ("raw/customers/*/*.parquet", f"builds/{live.table}*/*.parquet"):
        files = str(spark_dir / pattern)
        with duckdb.connect() as db:  # the files themselves, not the catalog
            found = db.execute(f"SELECT count(*) FROM read_parquet('{files}') {where}").fetchone()
        assert found == (0,), pattern
    assert not (spark_dir / "builds" / live.table).exists()  # rewritten elsewhere, removed
