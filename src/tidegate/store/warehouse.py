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
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from tidegate.errors import BuildError, ServiceUnavailableError
from tidegate.private import private_dir, private_file
from tidegate.project.project import Product, Project

RAW, BUILDS, PRODUCTS = "raw", "builds", "products"


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
        with self._lock:
            self.db.register("__tidegate_incoming", table)
            try:
                return self.load_source_sql(name, f"SELECT {casts} FROM __tidegate_incoming")
            finally:
                self.db.unregister("__tidegate_incoming")

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
                    self.db.execute(
                        f'DROP TABLE IF EXISTS {BUILDS}."{version_table(product, old)}"'
                    )

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

    def drop_version(self, product: str, version: int) -> None:
        with self._lock:
            self.db.execute(f'DROP TABLE IF EXISTS {BUILDS}."{version_table(product, version)}"')

    def arrow(self, sql: str, params: list[Any] | None = None, **relations: Any) -> Any:
        """Run a query on a private cursor with Arrow relations registered; return Arrow."""
        with self.cursor() as cur:
            for name, table in relations.items():
                cur.register(name, table)
            return cur.sql(sql, params=params or None).to_arrow_table()

    def close(self) -> None:
        with self._lock:
            self.db.close()
