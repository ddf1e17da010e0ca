"""Embedded online store: one SQLite table keyed by (product, version, key)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tidegate.store.online.base import OnlineStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
  product TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (product, version, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS current_versions (product TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._current: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_config(cls, config: Any, root: Path) -> SqliteOnlineStore:
        path = Path(config.path)
        return cls(path if path.is_absolute() else root / path)

    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        count = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for key, value in rows:
                    self._db.execute(
                        "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?)",
                        (product, version, key, value),
                    )
                    count += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return count

    def activate(self, product: str, version: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO current_versions VALUES (?, ?)", (product, version)
            )
            self._db.execute("COMMIT")
            self._db.execute(
                "DELETE FROM entities WHERE product = ? AND version <> ?", (product, version)
            )

    def current_version(self, product: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT version FROM current_versions WHERE product = ?", (product,)
            ).fetchone()
        return int(row[0]) if row else None

    def read(self, product: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT e.value FROM current_versions c JOIN entities e"
                " ON e.product = c.product AND e.version = c.version"
                " WHERE c.product = ? AND e.key = ?",
                (product, key),
            ).fetchone()
        return str(row[0]) if row else None

    def read_many(self, product: str, keys: Sequence[str]) -> dict[str, str]:
        version = self.current_version(product)
        if version is None or not keys:
            return {}
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(
                    f"SELECT key, value FROM entities WHERE product = ? AND version = ?"
                    f" AND key IN ({marks})",
                    (product, version, *chunk),
                ):
                    found[str(key)] = str(value)
        return found

    def upsert(self, product: str, rows: Iterable[tuple[str, str]]) -> int:
        version = self.current_version(product)
        if version is None:
            raise LookupError(f"product {product!r} has no current version to update")
        return self.write_batch(product, version, rows)

    def delete(self, product: str, keys: Sequence[str]) -> int:
        with self._lock:
            cursor = self._db.executemany(
                "DELETE FROM entities WHERE product = ? AND key = ?", [(product, k) for k in keys]
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()
