"""Sync state of the SQLite metadata store (`sql_sync.py`, shared with PostgreSQL), plus
what only SQLite has: moving the state of an older version (one SQL row per destination
row) into segments, and reads under the store's one lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from tidegate.meta.base import SyncedRow
from tidegate.meta.sql_parts import SQLITE
from tidegate.meta.sql_sync import SqlSyncMixin, state_table


class SqliteSyncMixin(SqlSyncMixin):
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _lock: threading.RLock
    _db: sqlite3.Connection
    _dialect = SQLITE

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _migrate_sync_rows(self) -> None:
        """State of an older version (one SQL row per destination row) into segments."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if "sync_rows" not in tables:
            return
        from tidegate.meta import sync_segments as seg

        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sync_rows)")}
        source = "source_key" if "source_key" in columns else "NULL"
        written = "written_at" if "written_at" in columns else "NULL"
        with self._tx() as db:
            syncs = [r[0] for r in db.execute("SELECT DISTINCT sync FROM sync_rows")]
            for sync in syncs:
                rows = db.execute(
                    f"SELECT key, row_hash, subject, {source}, {written} FROM sync_rows"
                    " WHERE sync = ?",
                    (sync,),
                ).fetchall()
                state = state_table([SyncedRow(*row) for row in rows], time.time())
                self._append_segment(db, sync, seg.ROWS, state, fresh=False)
            if "sync_inflight" in tables:
                for sync in [r[0] for r in db.execute("SELECT DISTINCT sync FROM sync_inflight")]:
                    rows = db.execute(
                        "SELECT key, row_hash, subject, source_key FROM sync_inflight"
                        " WHERE sync = ?",
                        (sync,),
                    ).fetchall()
                    self._put_inflight(db, sync, [SyncedRow(*row) for row in rows])
                db.execute("DROP TABLE sync_inflight")
            db.execute("DROP TABLE sync_rows")
