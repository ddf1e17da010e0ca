"""A build's online publish: the warehouse writes the built (not yet live) version into
the online store in bounded batches, and only then do the warehouse view and the online
pointer flip; a publish that fails half-way leaves the previous version served."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import tidegate.store.online as online_module
import tidegate.store.warehouse as warehouse_module
from tidegate.platform import Platform
from tidegate.store.online.base import OnlineStore, WriterSpec
from tidegate.store.online.codec import encode_row
from tidegate.store.online.sqlite_store import SqliteOnlineStore
from tidegate.store.warehouse import BUILDS, Warehouse


class _Recording:
    """A writer that notes the size of every batch it is handed."""

    def __init__(self, store: OnlineStore, sizes: list[int]) -> None:
        self.store = store
        self.sizes = sizes

    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        batch = list(rows)
        self.sizes.append(len(batch))
        return self.store.write_batch(product, version, batch)

    def close(self) -> None:
        self.store.close()


def test_duckdb_publish_streams_the_version_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    online = SqliteOnlineStore(tmp_path / "online.db")
    warehouse.db.execute(
        f'CREATE TABLE {BUILDS}."p__v1" AS SELECT i AS id, '
        "TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at, "
        "DATE '2026-01-01' + CAST(i % 30 AS INTEGER) AS day, CAST(i / 7 AS DECIMAL(10, 2)) AS x,"
        " CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' || i END AS name FROM range(2500) t(i)"
    )
    sizes: list[int] = []
    opened: list[WriterSpec] = []
    real_open = online_module.open_writer

    def recording_open(spec: WriterSpec) -> Any:
        opened.append(spec)
        return _Recording(real_open(spec), sizes)

    monkeypatch.setattr(online_module, "open_writer", recording_open)
    monkeypatch.setattr(warehouse_module, "PUBLISH_BATCH", 1_000)
    try:
        done = warehouse.publish_online("p", 1, "id", online.writer_spec())
        assert (done.rows, done.partitions, done.where) == (2_500, 1, "driver")
        assert sizes == [1_000, 1_000, 500]  # never the whole version at once
        assert opened == [online.writer_spec()]
        assert online.current_version("p") is None  # written, not activated
        online.activate("p", 1)
        expected = warehouse.arrow(f'SELECT * FROM {BUILDS}."p__v1"').to_pylist()
        stored = online.read_many("p", [str(r["id"]) for r in expected])
        assert stored == {str(r["id"]): encode_row(r) for r in expected}
    finally:
        online.close()
        warehouse.close()


def _online_rows(directory: Path, product: str) -> list[tuple[int, str, str]]:
    with sqlite3.connect(directory / ".tidegate/online.db") as db:
        return sorted(
            db.execute(
                "SELECT version, key, value FROM entities WHERE product = ?", (product,)
            ).fetchall()
        )


def test_a_publish_failing_half_way_leaves_the_previous_version_everywhere(
    demo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a Spark task failing after others wrote: some rows of the new version are in
    the online store when the publish fails. The build fails; the warehouse view, the
    online pointer and the metadata still give the previous version; the rows written
    under the failed version are gone."""
    from tidegate.products.builder import build_products

    product = "marketing_audience"
    real = Warehouse.publish_online

    def half_then_fail(
        self: Warehouse, name: str, version: int, key: str, writer: WriterSpec
    ) -> Any:
        store = online_module.open_writer(writer)
        try:
            store.write_batch(name, version, [("written-by-one-partition", "{}")])
        finally:
            store.close()
        raise RuntimeError("partition 1 failed")

    with Platform.open(demo_copy) as platform:
        before = platform.meta.live_version(product)
        assert before is not None
        served = platform.warehouse.arrow(f'SELECT * FROM products."{product}"').to_pylist()
        online_before = _online_rows(demo_copy, product)
        assert online_before
        monkeypatch.setattr(Warehouse, "publish_online", half_then_fail)
        results = build_products(platform, [product])
        assert [r.status for r in results] == ["failed"]
        assert "partition 1 failed" in results[0].error
        after = platform.meta.live_version(product)
        assert after is not None
        assert after.version == before.version
        assert platform.online.current_version(product) == before.version
        assert platform.warehouse.arrow(f'SELECT * FROM products."{product}"').to_pylist() == (
            served
        )
        assert _online_rows(demo_copy, product) == online_before  # the partial rows went
        monkeypatch.setattr(Warehouse, "publish_online", real)
        results = build_products(platform, [product])  # and the next build goes live
        assert [r.status for r in results] == ["live"]
        assert platform.online.current_version(product) == results[0].version


@pytest.mark.parametrize(
    ("kind", "shared", "same_host", "master", "expected"),
    [
        ("redis", True, False, "local[2]", True),
        ("redis", True, False, "spark://m:7077", True),
        ("redis", True, False, "yarn", True),
        ("redis", True, False, "sc://m:15002", False),  # Spark Connect: no RDD API
        ("sqlite", True, True, "local[2]", True),
        ("sqlite", True, True, "local[*]", True),
        ("sqlite", True, True, "spark://m:7077", False),  # executors elsewhere: no file
        ("sqlite", True, True, "k8s://https://api:6443", False),
        ("single", False, False, "local[2]", False),  # one writer at a time
    ],
)
def test_spark_executors_write_only_where_the_store_allows(
    kind: str, shared: bool, same_host: bool, master: str, expected: bool
) -> None:
    from tidegate.store.spark.publish import executors_can_write

    spec = WriterSpec(kind, {}, {}, shared, same_host)
    assert executors_can_write(spec, master) is expected
