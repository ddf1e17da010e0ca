"""How fresh each product has been: last update, lag against its SLO, breaches.

Kept in its own table of the metadata SQLite file (not in DuckDB), so `tidegate
status` can read it while a worker holds the warehouse. The lag of an update is the
time from the oldest event it covers entering the log to its rows being visible in
the online store; an update slower than the product's freshness is a breach.
A batch product with unapplied upstream changes is `stale since` the first of them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS product_freshness (
  product TEXT PRIMARY KEY, mode TEXT NOT NULL,
  last_update REAL, last_lag REAL, max_lag REAL NOT NULL DEFAULT 0,
  updates INTEGER NOT NULL DEFAULT 0, breaches INTEGER NOT NULL DEFAULT 0,
  stale_since REAL
);
"""


@dataclass(frozen=True)
class Freshness:
    product: str
    mode: str
    last_update: float | None
    last_lag: float | None
    max_lag: float
    updates: int
    breaches: int
    stale_since: float | None

    def current_lag(self, now: float | None = None) -> float:
        """Seconds the product is behind now: 0 when nothing is waiting for it."""
        if self.stale_since is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.stale_since)


class FreshnessLedger:
    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def updated(self, product: str, mode: str, lag: float, slo: float) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO product_freshness (product, mode, last_update, last_lag, max_lag,"
                " updates, breaches, stale_since) VALUES (?, ?, ?, ?, ?, 1, ?, NULL)"
                " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
                " last_update = excluded.last_update, last_lag = excluded.last_lag,"
                " max_lag = max(max_lag, excluded.last_lag), updates = updates + 1,"
                " breaches = breaches + excluded.breaches, stale_since = NULL",
                (product, mode, now, lag, lag, int(lag > slo)),
            )

    def stale(self, product: str, mode: str, since: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO product_freshness (product, mode, stale_since) VALUES (?, ?, ?)"
                " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
                " stale_since = coalesce(stale_since, excluded.stale_since)",
                (product, mode, since),
            )

    def all(self) -> dict[str, Freshness]:
        with self._lock:
            rows = self._db.execute(
                "SELECT product, mode, last_update, last_lag, max_lag, updates, breaches,"
                " stale_since FROM product_freshness"
            ).fetchall()
        return {str(r[0]): Freshness(*r) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
