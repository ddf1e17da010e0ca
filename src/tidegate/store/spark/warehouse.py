"""The Spark store: Spark loads sources and builds products into Parquet tables.

Layout under `warehouse` (a directory every Spark executor can reach):

* `raw/<source>/load-<n>/`          the latest snapshot of a source (Parquet files)
* `builds/<product>__v<N>/`         every built version of a product, immutable once built

Parquet, not Delta Lake or Iceberg: their Spark jars are not in the `pyspark` wheel and
cannot be fetched at run time on a locked-down machine, and plain Parquet directories
are what a Spark cluster and DuckDB both read without extensions. Immutability and the
atomic flip come from versioned directories plus a catalog pointer, not from a table
format's transaction log.

The catalog is a local DuckDB file with the same schemas the DuckDB store has
(`raw`, `builds`, `products`), whose relations are *views* on those Parquet
directories, cast to the contract's types. So every reader above the store (the
guard's bulk reads, exports, syncs, quality checks, erasure bookkeeping) reads exactly
what Spark built, unchanged; and flipping `products.<product>` to a new version is one
DuckDB transaction, as before. Stream sources stay DuckDB tables in the catalog (the
stream worker appends there); a Spark build reads a Parquet snapshot of them.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from tidegate.errors import BuildError, TidegateError
from tidegate.project.models import FileSource, SparkStoreConfig
from tidegate.project.project import Product, Project, Source
from tidegate.store.online.base import WriterSpec
from tidegate.store.spark.dialect import spark_type, to_spark, to_spark_tree
from tidegate.store.spark.session import spark_session
from tidegate.store.warehouse import (
    BUILDS,
    PRODUCTS,
    RAW,
    OnlinePublish,
    Warehouse,
    version_table,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

LOCATIONS = "main.spark_locations"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _bq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:500] if text else type(err).__name__


class SparkWarehouse(Warehouse):
    """Spark builds; a DuckDB catalog of Parquet views answers every read."""

    engine = "spark"
    reads_sources = True

    def __init__(
        self,
        config: SparkStoreConfig,
        root: Path,
        *,
        wait: float | None = 0.0,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        catalog = Path(config.catalog).expanduser()
        super().__init__(
            catalog if catalog.is_absolute() else root / catalog, wait=wait, notice=notice
        )
        self.config = config
        self.local = "://" not in config.warehouse
        where = Path(config.warehouse).expanduser()
        self.location = (
            str(where if where.is_absolute() else root / where)
            if self.local
            else config.warehouse.rstrip("/")
        )
        self._views_lock = threading.Lock()
        self._tag = hashlib.sha256(self.location.encode()).hexdigest()[:8]
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {LOCATIONS} (schema_name VARCHAR, name VARCHAR,"
            " location VARCHAR, PRIMARY KEY (schema_name, name))"
        )

    @cached_property
    def spark(self) -> SparkSession:
        """The process's SparkSession, started at the first build (not at open: reads
        from the catalog never need the JVM)."""
        return spark_session(self.config)

    # ------------------------------------------------------------ catalog

    def _location(self, schema: str, name: str) -> str | None:
        with self.cursor() as cur:
            row = cur.execute(
                f"SELECT location FROM {LOCATIONS} WHERE schema_name = ? AND name = ?",
                [schema, name],
            ).fetchone()
        return str(row[0]) if row else None

    def _set_location(self, schema: str, name: str, location: str | None) -> None:
        self.db.execute(
            f"DELETE FROM {LOCATIONS} WHERE schema_name = ? AND name = ?", [schema, name]
        )
        if location is not None:
            self.db.execute(f"INSERT INTO {LOCATIONS} VALUES (?, ?, ?)", [schema, name, location])

    def _view(self, schema: str, name: str, location: str, columns: dict[str, str]) -> None:
        """`schema.name` as a DuckDB view on the Parquet files at `location`."""
        casts = ", ".join(f"CAST({_q(c)} AS {t}) AS {_q(c)}" for c, t in columns.items())
        files = (location + "/*.parquet").replace("'", "''")
        self.db.execute(
            f"CREATE OR REPLACE VIEW {schema}.{_q(name)} AS "
            f"SELECT {casts} FROM read_parquet('{files}')"
        )
        self._set_location(schema, name, location)

    def _remove(self, location: str) -> None:
        if self.local:
            shutil.rmtree(location, ignore_errors=True)
        else:  # an object store: Hadoop's filesystem, through the JVM Spark already runs
            context: Any = self.spark.sparkContext
            hadoop_path = context._jvm.org.apache.hadoop.fs.Path(location)
            conf = context._jsc.hadoopConfiguration()
            hadoop_path.getFileSystem(conf).delete(hadoop_path, True)

    def _is_catalog_table(self, schema: str, name: str) -> bool:
        with self.cursor() as cur:
            row = cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?"
                " AND table_name = ? AND table_type = 'BASE TABLE'",
                [schema, name],
            ).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------ sources

    def load_source(self, project: Project, source: Source) -> int:
        """Spark reads the source (files natively; SQLite/PostgreSQL tables as Arrow
        through the driver), casts it to the declared types, writes a new Parquet
        snapshot, then the catalog view flips to it and the old snapshot goes."""
        from tidegate.store.sources import read_table_source

        config = source.config
        types = {c: s.type for c, s in source.columns.items()}
        if isinstance(config, FileSource):
            frame = self._read_file(project, source)
        else:
            frame = self.spark.createDataFrame(read_table_source(project, source))
        casts = [f"CAST({_bq(c)} AS {spark_type(t)}) AS {_bq(c)}" for c, t in types.items()]
        location = f"{self.location}/{RAW}/{source.name}/load-{time.time_ns()}"
        with self._lock:
            previous = self._location(RAW, source.name)
            try:
                frame.selectExpr(*casts).write.mode("overwrite").parquet(location)
            except Exception as err:
                self._remove(location)
                raise TidegateError(f"source {source.name!r}: {_first_line(err)}") from None
            self.db.execute("BEGIN")
            try:
                if self._is_catalog_table(RAW, source.name):
                    self.db.execute(f"DROP TABLE {RAW}.{_q(source.name)}")
                self._view(RAW, source.name, location, types)
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise
            if previous and previous != location:
                self._remove(previous)
            return self.count(f"{RAW}.{_q(source.name)}")

    def _read_file(self, project: Project, source: Source) -> DataFrame:
        config = source.config
        assert isinstance(config, FileSource)
        path = project.path(config.path)
        if not path.exists():
            raise TidegateError(
                f"source {source.name!r}: file {config.path} not found "
                f"({source.doc.display}:{source.doc.line_of(('path',))})"
            )
        fmt = config.resolved_format()
        reader = self.spark.read
        if fmt == "parquet":
            return reader.parquet(str(path))
        if fmt == "csv":
            return reader.option("header", True).csv(str(path))
        if fmt == "json":
            return reader.option("multiLine", path.read_bytes()[:1].strip() == b"[").json(str(path))
        raise TidegateError(f"source {source.name!r}: unsupported file format {config.format!r}")

    def load_source_sql(self, name: str, select_sql: str) -> int:
        raise BuildError(
            f"source {name!r}: the Spark store loads sources itself (load_source); "
            "a DuckDB SELECT cannot be run on Spark"
        )

    # ------------------------------------------------------------ builds

    def _spark_view(self, schema: str, name: str) -> str:
        """A Spark temp view on `schema.name` (its Parquet location); returns its name.
        A stream source, a DuckDB table in the catalog, is snapshotted to Parquet first."""
        view = f"tg_{self._tag}_{schema}_{name}"  # two projects in one process never clash
        location = self._location(schema, name)
        if location is None and schema == RAW and self._is_catalog_table(RAW, name):
            location = f"{self.location}/{RAW}/{name}/stream-{time.time_ns()}"
            Path(location).mkdir(parents=True, exist_ok=True)
            target = f"{location}/part-0.parquet".replace("'", "''")
            with self.cursor() as cur:
                cur.execute(f"COPY {RAW}.{_q(name)} TO '{target}' (FORMAT parquet)")
        if location is None:
            raise BuildError(f"{schema}.{name} is not in the Spark warehouse; build it first")
        with self._views_lock:
            self.spark.read.parquet(location).createOrReplaceTempView(view)
        return view

    def spark_sql(self, product: Product, project: Project) -> str:
        """The product's SQL for Spark: names resolved to temp views on the Parquet
        tables, transpiled from tidegate's dialect, cast to the contract's types."""
        try:
            tree = sqlglot.parse_one(product.sql, dialect="duckdb")
        except sqlglot.errors.ParseError as err:
            raise BuildError(f"product {product.name!r}: {err}") from None
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        views: dict[str, str] = {}
        for table in tree.find_all(exp.Table):
            if table.name and table.name not in ctes and table.name not in views:
                schema = RAW if table.name in project.sources else PRODUCTS
                views[table.name] = self._spark_view(schema, table.name)

        def rewrite(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.name in views and node.name not in ctes:
                alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
                return exp.Table(this=exp.to_identifier(views[node.name]), alias=alias)
            return node

        body = to_spark_tree(tree.transform(rewrite)).sql(dialect="spark")
        casts = ", ".join(
            f"CAST(q.{_bq(name)} AS {spark_type(spec.type)}) AS {_bq(name)}"
            for name, spec in product.columns.items()
        )
        return f"SELECT {casts} FROM ({body}) AS q"

    def build_version(self, product: Product, project: Project, version: int) -> int:
        """Build on Spark into `builds/<product>__v<N>/`; check the key on Spark; then
        the catalog gets a view on it. The previous version stays live on any failure."""
        name = version_table(product.name, version)
        location = f"{self.location}/{BUILDS}/{name}"
        key = _bq(product.config.key)
        with self._lock:
            try:
                sql = self.spark_sql(product, project)
                self.spark.sql(sql).write.mode("overwrite").parquet(location)
                built = self.spark.read.parquet(location)
                stats = built.selectExpr(
                    "count(*)", f"count(*) - count(DISTINCT {key})", f"count(*) - count({key})"
                ).first()
            except TidegateError:
                self._remove(location)
                raise
            except Exception as err:
                self._remove(location)
                raise BuildError(f"product {product.name!r}: {_first_line(err)}") from None
            assert stats is not None
            rows, duplicates, nulls = (int(v) for v in stats)
            if duplicates or nulls:
                self._remove(location)
                raise BuildError(
                    f"product {product.name!r}: key {product.config.key!r} must be unique and "
                    f"not null ({duplicates} duplicate, {nulls} null); the previous version "
                    "stays live"
                )
            self._view(BUILDS, name, location, {c: s.type for c, s in product.columns.items()})
            return rows

    def publish(self, product: str, version: int, keep: int = 2) -> None:
        with self._lock:
            location = self._location(BUILDS, version_table(product, version))
            super().publish(product, version, keep)
            self._set_location(PRODUCTS, product, location)

    def drop_version(self, product: str, version: int) -> None:
        name = version_table(product, version)
        with self._lock:
            location = self._location(BUILDS, name)
            self.db.execute(f"DROP VIEW IF EXISTS {BUILDS}.{_q(name)}")
            self._set_location(BUILDS, name, None)
            if location:
                self._remove(location)

    def delete_subjects(self, schema: str, name: str, column: str, values: list[str]) -> int:
        """Erasure on Parquet, which has no DELETE: Spark writes the relation again
        without those subjects' rows (a left anti join on the subject as text), the
        catalog flips to the new files, and the old files are removed, so the erased
        values are gone from the warehouse's bytes too. A stream table (DuckDB, in the
        catalog) deletes as in the DuckDB store."""
        location = self._location(schema, name)
        if location is None:
            return super().delete_subjects(schema, name, column, values)
        if not values:
            return 0
        with self.cursor() as cur:
            types = dict(
                cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    [schema, name],
                ).fetchall()
            )
        with self._lock:
            frame = self.spark.read.parquet(location)
            before = frame.count()
            erased = self.spark.createDataFrame([(str(v),) for v in values], "subject string")
            condition = frame[column].cast("string") == erased["subject"]
            kept = frame.join(erased, condition, "left_anti")
            stamp = time.time_ns()
            target = (
                f"{self.location}/{RAW}/{name}/load-{stamp}"
                if schema == RAW
                else f"{self.location}/{schema}/{name}-erased-{stamp}"
            )
            kept.write.mode("overwrite").parquet(target)
            after = self.spark.read.parquet(target).count()
            self.db.execute("BEGIN")
            try:
                self._view(schema, name, target, types)
                self.db.execute(
                    f"UPDATE {LOCATIONS} SET location = ? WHERE location = ?", [target, location]
                )
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                self._remove(target)
                raise
            self._remove(location)
            return int(before) - int(after)

    def publish_online(
        self, product: str, version: int, key_column: str, writer: WriterSpec
    ) -> OnlinePublish:
        """The built version's partitions write themselves into the online store, on
        the executors, in parallel (store/spark/publish.py); where the store cannot
        take writers there, the rows stream through the driver instead. A failed task
        is a BuildError: nothing is activated."""
        from tidegate.store.spark.publish import (
            executors_can_write,
            publish_from_driver,
            publish_from_executors,
        )

        location = self._location(BUILDS, version_table(product, version))
        if location is None:
            raise BuildError(f"product {product!r} has no version {version} in the Spark warehouse")
        try:
            frame = self.spark.read.parquet(location)
            if not executors_can_write(writer, self.config.master):
                return publish_from_driver(frame, writer, product, version, key_column)
            parallelism = int(self.spark.sparkContext.defaultParallelism)
            return publish_from_executors(frame, writer, product, version, key_column, parallelism)
        except TidegateError:
            raise
        except Exception as err:
            raise BuildError(
                f"product {product!r}: publishing to the online store failed: {_first_line(err)}"
            ) from None

    def frame(self, schema: str, name: str) -> DataFrame:
        """A Spark DataFrame on `schema.name` (guarded Spark reads, benchmarks)."""
        return self.spark.table(self._spark_view(schema, name))

    def sql(self, duckdb_sql: str) -> DataFrame:
        """Run tidegate-dialect SQL on Spark (names must be Spark views)."""
        return self.spark.sql(to_spark(duckdb_sql))
