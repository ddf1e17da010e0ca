"""Embedded online store: one SQLite table keyed by (product, version, key).

Each value carries `written_at` (build or incremental update) and `expires_at` (when
the product has a TTL). Reads check the TTL configured now against `written_at`, in
the same statement that resolves the current version, so a reader sees one
consistent version even while a build activates or the stream worker upserts.

Many processes of one host may write a version at once (`shared`, `same_host`): the
file is in WAL mode, each batch is one `BEGIN IMMEDIATE` transaction, and a writer
waits (up to 30 s) for the one before it, so writers take turns per batch and readers
never wait. That is what Spark's local mode needs to publish from its executors. On
a cluster the executors are other machines, which cannot reach this file (and SQLite's
locks do not hold over a network filesystem): there the build publishes from the
driver instead (store/spark/publish.py decides).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tidegate.sqlite_db import immediate, open_private
from tidegate.store.online.base import Entry, OnlineStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
  product TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  written_at REAL NOT NULL DEFAULT 0, expires_at REAL,
  PRIMARY KEY (product, version, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS current_versions (product TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""
#: columns added after the first release: (name, declaration), added to older files
ADDED_COLUMNS = (("written_at", "REAL NOT NULL DEFAULT 0"), ("expires_at", "REAL"))
CHUNK = 500  # keys per IN (...) list, under SQLite's variable limit

_READ = (
    "SELECT e.key, e.value, e.version, e.written_at FROM current_versions c JOIN entities e"
    " ON e.product = c.product AND e.version = c.version"
    " WHERE c.product = ? AND e.written_at > ? AND e.key IN ({marks})"
)


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"
    shared = True
    same_host = True

    def __init__(self, path: Path | str, ttls: Mapping[str, float] | None = None) -> None:
        super().__init__(ttls)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_private(self.path)
        self._db.executescript(SCHEMA)
        present = {str(r[1]) for r in self._db.execute("PRAGMA table_info(entities)")}
        for name, declaration in ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE entities ADD COLUMN {name} {declaration}")

    @classmethod
    def from_config(cls, config: Any, root: Path) -> SqliteOnlineStore:
        path = Path(config.path)
        return cls(path if path.is_absolute() else root / path)

    def writer_config(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve())}

    @classmethod
    def from_writer_config(cls, config: Mapping[str, Any]) -> SqliteOnlineStore:
        return cls(Path(str(config["path"])))

    def _write(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        now = time.time()
        ttl = self.ttl(product)
        expires = now + ttl if ttl is not None else None
        count = 0

        def values() -> Iterator[tuple[str, int, str, str, float, float | None]]:
            nonlocal count  # a generator, not a list: a build streams millions of rows
            for key, value in rows:
                count += 1
                yield (product, version, key, value, now, expires)

        # IMMEDIATE: take the write lock first (waiting for another writer process)
        # rather than fail upgrading a read lock
        with self._lock, immediate(self._db) as db:
            # one executemany: a statement per row was most of a publish's time
            db.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?)", values())
        return count

    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        return self._write(product, version, rows)

    def activate(self, product: str, version: int) -> None:
        with self._lock:
            with immediate(self._db) as db:
                db.execute(
                    "INSERT OR REPLACE INTO current_versions VALUES (?, ?)", (product, version)
                )
            self._db.execute(
                "DELETE FROM entities WHERE product = ? AND version <> ?", (product, version)
            )

    def discard(self, product: str, version: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM entities WHERE product = ? AND version = ? AND version IS NOT"
                " (SELECT version FROM current_versions WHERE product = ?)",
                (product, version, product),
            )

    def current_version(self, product: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM current_versions WHERE product = ?", (product,)
            ).fetchone()
        return int(row[0]) if row else None

    def read_entries(self, product: str, keys: Sequence[str]) -> dict[str, Entry]:
        if not keys:
            return {}
        fresh_after = self._fresh_after(product)
        after = fresh_after if fresh_after is not None else float("-inf")
        found: dict[str, Entry] = {}
        with self._lock:
            if len(keys) <= CHUNK:
                self._collect(found, product, after, keys)
                return found
            # several statements: one read transaction, so one version is seen throughout
            self._db.execute("BEGIN")
            try:
                for start in range(0, len(keys), CHUNK):
                    self._collect(found, product, after, keys[start : start + CHUNK])
            finally:
                self._db.execute("COMMIT")
        return found

    def _collect(
        self, found: dict[str, Entry], product: str, after: float, keys: Sequence[str]
    ) -> None:
        marks = ",".join("?" * len(keys))
        for key, value, version, written_at in self._db.execute(
            _READ.format(marks=marks), (product, after, *keys)
        ):
            found[str(key)] = Entry(str(value), int(version), float(written_at))

    def upsert(self, product: str, rows: Iterable[tuple[str, str]]) -> int:
        version = self.current_version(product)
        if version is None:
            raise LookupError(f"product {product!r} has no current version to update")
        return self._write(product, version, rows)

    def delete(self, product: str, keys: Sequence[str]) -> int:
        with self._lock:
            cursor = self._db.executemany(
                "DELETE FROM entities WHERE product = ? AND key = ?", [(product, k) for k in keys]
            )
            return int(cursor.rowcount)

    def keys(self, product: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT e.key FROM current_versions c JOIN entities e"
                " ON e.product = c.product AND e.version = c.version WHERE c.product = ?",
                (product,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def purge_expired(self) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM entities WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (time.time(),),
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()
