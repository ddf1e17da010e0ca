"""Observations as time series, in tables of their own inside the metadata SQLite file.

Kept in SQLite (like the freshness ledger), not DuckDB, so `tidegate observe` can read
them while a worker holds the warehouse. One connection per store, WAL mode.

* `obs_points`   (product, version, at, kind, status, metric, col, value): every pillar
                 metric; `col` is '' for product-level metrics
* `obs_schemas`  (product, version, at, fingerprint, columns JSON): the schema pillar
* `obs_quality`  one row per check run
* `obs_alerts`   the last time each alert key was sent (deduplication)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS obs_points (
  product TEXT NOT NULL, version INTEGER, at REAL NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, metric TEXT NOT NULL, col TEXT NOT NULL DEFAULT '', value REAL
);
CREATE INDEX IF NOT EXISTS obs_points_series ON obs_points (product, metric, col, at);
CREATE TABLE IF NOT EXISTS obs_schemas (
  product TEXT NOT NULL, version INTEGER, at REAL NOT NULL, status TEXT NOT NULL,
  fingerprint TEXT NOT NULL, columns TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS obs_schemas_by_product ON obs_schemas (product, at);
CREATE TABLE IF NOT EXISTS obs_quality (
  product TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL, check_name TEXT NOT NULL,
  check_type TEXT NOT NULL, severity TEXT NOT NULL, col TEXT NOT NULL DEFAULT '',
  passed INTEGER NOT NULL, failing_rows INTEGER, observed REAL, expected TEXT NOT NULL,
  table_name TEXT, error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS obs_quality_by_product ON obs_quality (product, version);
CREATE TABLE IF NOT EXISTS obs_alerts (
  key TEXT PRIMARY KEY, last_sent REAL NOT NULL, count INTEGER NOT NULL DEFAULT 1
);
"""


@dataclass(frozen=True)
class Point:
    at: float
    value: float
    version: int | None = None


@dataclass(frozen=True)
class SchemaSnapshot:
    product: str
    version: int | None
    at: float
    fingerprint: str
    columns: dict[str, str]


class ObserveStore:
    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ObserveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- pillars

    def add_points(
        self,
        product: str,
        version: int | None,
        at: float,
        kind: str,
        status: str,
        metrics: Iterable[tuple[str, str, float | None]],
    ) -> None:
        rows = [(product, version, at, kind, status, m, c, v) for m, c, v in metrics]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO obs_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def series(
        self,
        product: str,
        metric: str,
        col: str = "",
        *,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
        status: str | None = "live",
    ) -> list[Point]:
        sql = (
            "SELECT at, value, version FROM obs_points WHERE product = ? AND metric = ? AND col = ?"
        )
        params: list[Any] = [product, metric, col]
        for clause, value in (
            ("at >= ?", since),
            ("at < ?", until),
            ("kind = ?", kind),
            ("status = ?", status),
        ):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY at", params).fetchall()
        return [Point(float(a), float(v), ver) for a, v, ver in rows if v is not None]

    def series_names(self, product: str) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT metric, col FROM obs_points WHERE product = ?"
                " ORDER BY col, metric",
                [product],
            ).fetchall()
        return [(str(m), str(c)) for m, c in rows]

    def add_schema(self, snapshot: SchemaSnapshot, status: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO obs_schemas VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot.product,
                    snapshot.version,
                    snapshot.at,
                    status,
                    snapshot.fingerprint,
                    json.dumps(snapshot.columns),
                ),
            )

    def last_schema(self, product: str, before: float | None = None) -> SchemaSnapshot | None:
        sql = "SELECT product, version, at, fingerprint, columns FROM obs_schemas"
        sql += " WHERE product = ? AND status = 'live'"
        params: list[Any] = [product]
        if before is not None:
            sql += " AND at < ?"
            params.append(before)
        with self._lock:
            row = self._db.execute(sql + " ORDER BY at DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        return SchemaSnapshot(str(row[0]), row[1], float(row[2]), str(row[3]), json.loads(row[4]))

    # ---------------------------------------------------------------- quality

    def add_quality(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO obs_quality VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            self._db.execute("COMMIT")

    def quality(self, product: str, version: int | None = None) -> list[dict[str, Any]]:
        """Check results of `version` (default: the latest version checked)."""
        with self._lock:
            if version is None:
                row = self._db.execute(
                    "SELECT max(version) FROM obs_quality WHERE product = ?", [product]
                ).fetchone()
                version = row[0] if row else None
                if version is None:
                    return []
            cursor = self._db.execute(
                "SELECT * FROM obs_quality WHERE product = ? AND version = ? ORDER BY rowid",
                [product, version],
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    # ---------------------------------------------------------------- alert deduplication

    def should_send(self, key: str, window: float, now: float | None = None) -> bool:
        """True (and remembered) unless `key` was sent less than `window` seconds ago."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT last_sent FROM obs_alerts WHERE key = ?", [key]
                ).fetchone()
                if row is not None and now - float(row[0]) < window:
                    self._db.execute("UPDATE obs_alerts SET count = count + 1 WHERE key = ?", [key])
                    self._db.execute("COMMIT")
                    return False
                self._db.execute(
                    "INSERT INTO obs_alerts (key, last_sent) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET last_sent = excluded.last_sent, count = count + 1",
                    [key, now],
                )
                self._db.execute("COMMIT")
                return True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
