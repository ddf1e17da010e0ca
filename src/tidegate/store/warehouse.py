"""The analytical store: raw source snapshots and product versions in one DuckDB file.

Layout inside DuckDB:

* `raw.<source>`          the latest snapshot of each source
* `builds.<product>__vN`  every built version of a product, immutable once built
* `products.<product>`    a view on the live version; swapping it is one transaction,
                          so a reader sees the old version or the new one, never half

Product SQL names sources and products by bare name; `qualify_sql` rewrites those
references (a SQLGlot tree rewrite, not string surgery) to the schemas above.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from tidegate.errors import BuildError, ServiceUnavailableError
from tidegate.private import private_dir, private_file
from tidegate.project.project import Product, Project, Source
from tidegate.store.online.base import WriterSpec

RAW, BUILDS, PRODUCTS = "raw", "builds", "products"
#: rows per online-store write when a build publishes (one transaction or pipeline each)
PUBLISH_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class OnlinePublish:
    """What writing a version into the online store took: rows written, how many
    writers (partitions) wrote them, the wall time, and where they ran (`driver`: the
    building process; `executors`: Spark's, in parallel)."""

    rows: int
    partitions: int
    seconds: float
    where: str


@contextmanager
def registered(db: Any, name: str, table: Any) -> Iterator[None]:
    """`table` (Arrow) queryable as the relation `name` on `db` (a DuckDB connection or
    cursor) for the block, unregistered after even when it raises: a relation left
    registered keeps its Arrow table alive, and visible to every later query on `db`."""
    db.register(name, table)
    try:
        yield
    finally:
        db.unregister(name)


def version_table(product: str, version: int) -> str:
    return f"{product}__v{version}"


#: how often a process waiting for the warehouse tries again, and tells the person waiting
LOCK_RETRY = 0.5
LOCK_NOTICE_EVERY = 10.0


class WarehouseLockedError(ServiceUnavailableError):
    """Another process holds the DuckDB file (one writer process per file) and did not let
    go within the wait; the message names it."""


def lock_holder(message: str) -> str:
    """Who holds the DuckDB lock, from DuckDB's message: `PID 123 (tidegate build -p x)`."""
    found = re.search(r"\(PID (\d+)\)", message)
    if not found:
        return "another process"
    pid = found.group(1)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"PID {pid}"
    words = [w.decode("utf-8", "replace") for w in raw.split(b"\0") if w]
    if len(words) > 1 and words[0].rsplit("/", 1)[-1].startswith("python"):
        words = words[1:]  # `python .../tidegate build`: the script says more
    if words:
        words[0] = words[0].rsplit("/", 1)[-1]
    return f"PID {pid} ({' '.join(words)[:200]})" if words else f"PID {pid}"


def connect_waiting(
    path: Path, wait: float | None, notice: Callable[[str], None] | None = None
) -> Any:
    """`duckdb.connect(path)`, waiting while another process holds the file's lock.

    `wait` is how long in seconds (None: for as long as it takes, what a standby worker
    wants); `notice` hears, at the start and every LOCK_NOTICE_EVERY seconds, who is
    waited for. Past `wait`, WarehouseLockedError says who holds the file."""
    import duckdb

    started = time.monotonic()
    told = 0.0
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            holder = lock_holder(str(err))
        waited = time.monotonic() - started
        if wait is not None and waited >= wait:
            raise WarehouseLockedError(
                f"the warehouse {path} is held by {holder}, and it was not released within"
                f" {wait:.0f}s; try again when that process ends (or run this command while"
                " `tidegate run` is up: it answers for the warehouse it holds)"
            )
        if notice is not None and (not told or waited - told >= LOCK_NOTICE_EVERY):
            told = max(waited, 1e-9)
            limit = "" if wait is None else f" (up to {wait:.0f}s)"
            notice(f"waiting for the warehouse {path}: held by {holder}{limit}")
        time.sleep(LOCK_RETRY)


class Warehouse:
    """DuckDB builds and holds everything (the embedded default, `type: duckdb`)."""

    #: what builds the products; the Spark store (store/spark/) says "spark"
    engine = "duckdb"
    #: whether the store reads sources itself (`load_source`) rather than being handed a
    #: DuckDB SELECT or an Arrow table (`load_source_sql` / `load_source_arrow`)
    reads_sources = False

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        wait: float | None = 0.0,
        notice: Callable[[str], None] | None = None,
    ):
        private_dir(path.parent)
        self.path = path
        self._lock = threading.RLock()
        self.db = connect_waiting(path, wait, notice)
        private_file(path, side_files=True)  # DuckDB creates it; its `.wal` follows the umask
        self.db.execute("SET TimeZone = 'UTC'")
        if threads:
            self.db.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self.db.execute("SET memory_limit = ?", [memory_limit])
        for schema in (RAW, BUILDS, PRODUCTS):
            self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor of its own for a thread; DuckDB connections are not thread-safe."""
        cursor = self.db.cursor()
        try:
            cursor.execute("SET TimeZone = 'UTC'")
            yield cursor
        finally:
            cursor.close()

    # ---------------------------------------------------------------- sources

    def load_source_sql(self, name: str, select_sql: str) -> int:
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute(f'CREATE OR REPLACE TABLE {RAW}."{name}" AS {select_sql}')
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise
            return self.count(f'{RAW}."{name}"')

    def load_source_arrow(self, name: str, table: Any, columns: dict[str, str]) -> int:
        casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in columns.items())
        with self._lock, registered(self.db, "__tidegate_incoming", table):
            return self.load_source_sql(name, f"SELECT {casts} FROM __tidegate_incoming")

    def load_source(self, project: Project, source: Source) -> int:
        """Snapshot a file or table source into `raw.<name>`; return its row count (what
        the builder calls when `reads_sources`; DuckDB's version, for completeness)."""
        from tidegate.project.models import FileSource
        from tidegate.store.sources import file_select, read_table_source

        if isinstance(source.config, FileSource):
            return self.load_source_sql(source.name, file_select(project, source))
        table = read_table_source(project, source)
        types = {c: s.type for c, s in source.columns.items()}
        return self.load_source_arrow(source.name, table, types)

    def publish_online(
        self, product: str, version: int, key_column: str, writer: WriterSpec
    ) -> OnlinePublish:
        """Write every row of the built `version` (not yet live) into the online store
        under that version number, keyed by `key_column`; do not activate it (the
        builder does, in one step, once everything is written).

        DuckDB's way: one writer in this process, fed Arrow record batches of
        PUBLISH_BATCH rows from a streaming reader, so at most one batch is ever held as
        Python values, whatever the product's size."""
        from tidegate.store.online import open_writer
        from tidegate.store.online.codec import encode_row

        started = time.perf_counter()
        table = f'{BUILDS}."{version_table(product, version)}"'
        written = 0
        store = open_writer(writer)
        try:
            with self.cursor() as cur:
                reader = cur.sql(f"SELECT * FROM {table}").to_arrow_reader(PUBLISH_BATCH)
                for batch in reader:
                    rows = batch.to_pylist()
                    written += store.write_batch(
                        product, version, ((str(r[key_column]), encode_row(r)) for r in rows)
                    )
        finally:
            store.close()
        return OnlinePublish(written, 1, time.perf_counter() - started, "driver")

    def count(self, relation: str) -> int:
        with self.cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM {relation}").fetchone()
        return int(row[0]) if row else 0

    def has_relation(self, schema: str, name: str) -> bool:
        with self.cursor() as cur:
            row = cur.execute(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = ? AND table_name = ?",
                [schema, name],
            ).fetchone()
        return bool(row and row[0])

    # ---------------------------------------------------------------- products

    def qualify_sql(self, product: Product, project: Project) -> str:
        tree = sqlglot.parse_one(product.sql, dialect="duckdb")
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}

        def rewrite(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.name and node.name not in ctes:
                schema = RAW if node.name in project.sources else PRODUCTS
                alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
                return exp.Table(
                    this=exp.to_identifier(node.name, quoted=True),
                    db=exp.to_identifier(schema),
                    alias=alias,
                )
            return node

        return tree.transform(rewrite).sql(dialect="duckdb")

    def build_version(self, product: Product, project: Project, version: int) -> int:
        """Build `product` into a new immutable version table; return its row count.

        The result is cast to the contract's types and its key checked (not null,
        unique) before anyone can see it.
        """
        body = self.qualify_sql(product, project)
        casts = ", ".join(
            f'CAST(q."{name}" AS {spec.type}) AS "{name}"' for name, spec in product.columns.items()
        )
        table = f'{BUILDS}."{version_table(product.name, version)}"'
        key = product.config.key
        with self._lock:
            try:
                self.db.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT {casts} FROM ({body}) q"
                )
            except Exception as err:
                raise BuildError(f"product {product.name!r}: {err}") from None
            row = self.db.execute(
                f'SELECT count(*), count(*) - count(DISTINCT "{key}"), count(*) - count("{key}")'
                f" FROM {table}"
            ).fetchone()
            assert row is not None
            rows, duplicates, nulls = (int(v) for v in row)
            if duplicates or nulls:
                self.db.execute(f"DROP TABLE {table}")
                raise BuildError(
                    f"product {product.name!r}: key {key!r} must be unique and not null "
                    f"({duplicates} duplicate, {nulls} null); the previous version stays live"
                )
            return rows

    def publish(self, product: str, version: int, keep: int = 2) -> None:
        """Point `products.<product>` at the version, atomically; drop versions past `keep`."""
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute(
                    f'CREATE OR REPLACE VIEW {PRODUCTS}."{product}" AS '
                    f'SELECT * FROM {BUILDS}."{version_table(product, version)}"'
                )
                self.db.execute("COMMIT")
            except Exception:
                self.db.execute("ROLLBACK")
                raise
            for old in self._versions(product):
                if old <= version - keep:
                    self.drop_version(product, old)

    def _versions(self, product: str) -> list[int]:
        rows = self.db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
            " AND table_name LIKE ?",
            [BUILDS, f"{product}__v%"],
        ).fetchall()
        found = []
        for (name,) in rows:
            suffix = str(name)[len(product) + 3 :]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def delete_subjects(self, schema: str, name: str, column: str, values: list[str]) -> int:
        """Delete the rows of `schema.name` whose `column`, as text, is one of `values`
        (erasure: privacy/tombstones.py); return how many rows went."""
        relation = f'{schema}."{name}"'
        quoted = '"' + column.replace('"', '""') + '"'
        with self._lock, self.cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM {relation}").fetchone()
            before = int(row[0]) if row else 0
            for value in values:
                cur.execute(f"DELETE FROM {relation} WHERE CAST({quoted} AS VARCHAR) = ?", [value])
            row = cur.execute(f"SELECT count(*) FROM {relation}").fetchone()
            return before - (int(row[0]) if row else 0)

    def drop_version(self, product: str, version: int) -> None:
        with self._lock:
            self.db.execute(f'DROP TABLE IF EXISTS {BUILDS}."{version_table(product, version)}"')

    def scrub(self, relations: list[str]) -> int:
        """Make deleted rows unreadable in the file's bytes, not just in queries; returns
        the blocks overwritten.

        A DuckDB `DELETE` only marks rows deleted: their values stay in the column
        segments, and a dropped or replaced table leaves its blocks on the free list with
        their old contents. So (1) each of `relations` (quoted names) is rewritten, which
        moves its remaining rows to new blocks, (2) a checkpoint frees the old ones, (3) a
        filler table of random numbers takes every free block and is dropped again, so
        the free blocks hold noise. The write-ahead log is emptied by the checkpoint.
        Costs a write of the free space; meant for erasure, not for every delete."""
        with self._lock:
            for relation in relations:
                self.db.execute("BEGIN")
                try:
                    self.db.execute(
                        f"CREATE OR REPLACE TEMP TABLE __tidegate_keep AS SELECT * FROM {relation}"
                    )
                    self.db.execute(f"DELETE FROM {relation}")
                    self.db.execute(f"INSERT INTO {relation} SELECT * FROM __tidegate_keep")
                    self.db.execute("DROP TABLE __tidegate_keep")
                    self.db.execute("COMMIT")
                except Exception:
                    self.db.execute("ROLLBACK")
                    raise
            self.db.execute("CHECKPOINT")
            overwritten = 0
            filled = False
            for _ in range(4):  # a filler can leave a block half used: fill again
                row = self.db.execute(
                    "SELECT free_blocks, block_size FROM pragma_database_size()"
                    " WHERE database_name = current_database()"
                ).fetchone()
                if row is None or not row[0]:
                    break
                free, size = int(row[0]), int(row[1])
                overwritten += free
                values = free * size // 8 + 65_536
                verb = "INSERT INTO" if filled else "CREATE OR REPLACE TABLE"
                self.db.execute(
                    f"{verb} main.__tidegate_scrub"
                    f" {'' if filled else 'AS '}SELECT random() AS noise FROM range({values})"
                )
                filled = True
                self.db.execute("CHECKPOINT")
            if filled:
                self.db.execute("DROP TABLE main.__tidegate_scrub")
                self.db.execute("CHECKPOINT")
            return overwritten

    def arrow(self, sql: str, params: list[Any] | None = None, **relations: Any) -> Any:
        """Run a query on a private cursor with Arrow relations registered; return Arrow."""
        with self.cursor() as cur:
            for name, table in relations.items():
                cur.register(name, table)
            return cur.sql(sql, params=params or None).to_arrow_table()

    def close(self) -> None:
        with self._lock:
            self.db.close()
