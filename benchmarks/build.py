"""`build`: the demo shop's three products, from Parquet to published, against raw DuckDB.

tidegate: `Platform.open` → `load_sources` → `build_products` → `close`, on a fresh
copy of the demo project each run (empty warehouse, metadata and online store), so
every run does the same first build: each source cast to its declared schema, each
product built into a versioned table, its key checked, the view flipped atomically,
its rows written to the online (serving) store, the version recorded and audited.

The physical limit: a fresh DuckDB file, `CREATE TABLE <source> AS SELECT * FROM
read_parquet(...)` per source, then each product's own SQL (the project's `.sql`
files, unchanged: the raw tables carry the names the SQL uses) as `CREATE TABLE AS`
in build order, and `close` (which checkpoints, as tidegate's close does).

A second, informative limit adds what tidegate's publish adds beyond DuckDB: every
product's rows as JSON into a SQLite key-value table, in one transaction per product.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Benchmark,
    Contender,
    Sample,
    Stopwatch,
    register,
    timed_attribute,
)

TIDEGATE = "tidegate build"
RAW = "raw DuckDB (CTAS)"
RAW_KV = "raw DuckDB + SQLite KV"


@register
class BuildBenchmark(Benchmark):
    name = "build"
    title = "demo shop: load sources and build all products, vs raw DuckDB"
    rounds_full = 7
    rounds_quick = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_dir = self.workdir / "data"
        self.counter = 0
        self.rows: dict[str, int] = {}
        self.order: list[str] = []
        self.sql: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.sources: dict[str, Path] = {}

    def shop_size(self) -> Any:
        from tidegate.demo.generator import ShopSize

        if self.quick:
            return ShopSize(customers=2_000, orders=20_000, web_events=200_000, tickets=4_000)
        return ShopSize()

    def sizes(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self.shop_size())

    def contenders(self) -> list[Contender]:
        return [
            Contender(
                TIDEGATE,
                "tidegate",
                description="Platform.open + load_sources + build_products + close",
            ),
            Contender(
                RAW,
                "limit",
                reference=True,
                description="fresh DuckDB file; CTAS per source and per product; close",
            ),
            Contender(
                RAW_KV,
                "limit",
                description="the raw DuckDB build, plus every product row as JSON in SQLite",
            ),
        ]

    def todo(self) -> list[str]:
        return ["peer: dbt-duckdb building the same SQL (own venv via harness.peer_venv)"]

    def prepare(self) -> None:
        from tidegate.demo.generator import generate_shop
        from tidegate.demo.runner import prepare_directory
        from tidegate.project import load_project

        self.rows = generate_shop(self.data_dir, size=self.shop_size())
        template = self.workdir / "template"
        prepare_directory(template)
        project = load_project(template)
        self.order = project.build_order()
        self.sql = {name: project.products[name].sql for name in self.order}
        self.keys = {name: project.products[name].config.key for name in self.order}
        self.sources = {
            name: self.data_dir / Path(source.config.path).name
            for name, source in project.sources.items()
        }
        shutil.rmtree(template)

    def environment(self) -> dict[str, Any]:
        return {"rows": self.rows, "build_order": self.order}

    def _fresh_dir(self) -> Path:
        self.counter += 1
        return self.workdir / f"run-{self.counter}"

    def run(self, contender: Contender) -> Sample:
        if contender.name == TIDEGATE:
            return self._tidegate()
        return self._raw(with_kv=contender.name == RAW_KV)

    def _tidegate(self) -> Sample:
        from tidegate.demo.runner import prepare_directory

        directory = self._fresh_dir()
        prepare_directory(directory)
        (directory / "data").symlink_to(self.data_dir, target_is_directory=True)
        watch = Stopwatch()
        results, seconds = timed_build(directory, watch, "online_publish")
        spans = watch.spans
        metrics = {
            "open_s": spans["open"],
            "load_sources_s": spans["load_sources"],
            "duckdb_build_s": spans["build_products"] - spans.get("online_publish", 0.0),
            "online_publish_s": spans.get("online_publish", 0.0),
            "close_s": spans["close"],
        }
        return Sample(seconds, metrics, info={"products": {r.product: r.rows for r in results}})

    def _raw(self, *, with_kv: bool) -> Sample:
        import duckdb

        directory = self._fresh_dir()
        directory.mkdir()
        watch = Stopwatch()
        rows: dict[str, int] = {}
        try:
            started = time.perf_counter()
            with watch("open"):
                db = duckdb.connect(str(directory / "raw.duckdb"))
                db.execute("SET TimeZone = 'UTC'")
            try:
                with watch("load_sources"):
                    for name, path in self.sources.items():
                        literal = str(path).replace("'", "''")
                        db.execute(
                            f"CREATE TABLE \"{name}\" AS SELECT * FROM read_parquet('{literal}')"
                        )
                with watch("build_products"):
                    for name in self.order:
                        db.execute(f'CREATE TABLE "{name}" AS {self.sql[name]}')
                if with_kv:
                    with watch("online_publish"):
                        rows = self._publish_kv(db, directory / "online.db")
            finally:
                with watch("close"):
                    db.close()
            seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        metrics = {f"{name}_s": value for name, value in watch.spans.items()}
        return Sample(seconds, metrics, info={"products": rows} if rows else {})

    def _publish_kv(self, db: Any, path: Path) -> dict[str, int]:
        """Each product's rows as JSON under their key, one transaction per product."""
        kv = sqlite3.connect(str(path), isolation_level=None)
        try:
            kv.execute("PRAGMA journal_mode=WAL")
            kv.execute("PRAGMA synchronous=NORMAL")
            kv.execute(
                "CREATE TABLE entities (product TEXT NOT NULL, key TEXT NOT NULL,"
                " value TEXT NOT NULL, PRIMARY KEY (product, key)) WITHOUT ROWID"
            )
            counts = {}
            for name in self.order:
                key = self.keys[name]
                table = db.sql(f'SELECT * FROM "{name}"').to_arrow_table()
                kv.execute("BEGIN")
                kv.executemany(
                    "INSERT INTO entities VALUES (?, ?, ?)",
                    (
                        (name, str(row[key]), json.dumps(row, default=str))
                        for row in table.to_pylist()
                    ),
                )
                kv.execute("COMMIT")
                counts[name] = table.num_rows
            return counts
        finally:
            kv.close()


def timed_build(directory: Path, watch: Stopwatch, publish: str) -> tuple[list[Any], float]:
    """Open the project in `directory`, load its sources, build every product and close,
    each stage on `watch` (the online publish under `publish`); the directory is removed
    afterwards. Returns the build results and the total seconds; a product that did not
    go live is an error, not a sample."""
    import tidegate.products.builder as builder
    from tidegate.platform import Platform

    try:
        with timed_attribute(builder, "_publish_online", watch, publish, missing_ok=True):
            started = time.perf_counter()
            with watch("open"):
                platform = Platform.open(directory)
            with watch("load_sources"):
                builder.load_sources(platform)
            with watch("build_products"):
                results = builder.build_products(platform)
            with watch("close"):
                platform.close()
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    failed = [r for r in results if r.status != "live"]
    if failed:
        raise RuntimeError(f"products did not publish: {failed}")
    return list(results), seconds
