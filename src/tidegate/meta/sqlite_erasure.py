"""Erasure on the SQLite metadata store (`sql_erasure.py`, shared with PostgreSQL), plus
what only SQLite can do: deletes run with `PRAGMA secure_delete` on, so erased values
are overwritten in the file rather than left in free pages, and the write-ahead log is
truncated afterwards so no older page image keeps them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta.sql_erasure import SqlErasureMixin


class SqliteErasureMixin(SqlErasureMixin):
    def erasing(self) -> AbstractContextManager[None]:
        """A block in which deletes overwrite their data (other stores' methods too)."""
        return _SecureDelete(self)


class _SecureDelete:
    """`secure_delete` on for the block, then the WAL checkpointed and truncated.
    Blocks nest (an erasure around a dead-letter delete): the outermost one ends it."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __enter__(self) -> None:
        with self._store._lock:
            depth = self._store.__dict__.get("_secure_depth", 0)
            self._store._secure_depth = depth + 1
            if depth == 0:
                # restored after, not turned off: some builds (Debian's) have it on always
                row = self._store._db.execute("PRAGMA secure_delete").fetchone()
                self._store._secure_before = int(row[0]) if row else 0
                self._store._db.execute("PRAGMA secure_delete = ON")

    def __exit__(self, *exc: object) -> None:
        with self._store._lock:
            self._store._secure_depth -= 1
            if self._store._secure_depth:
                return
            before = int(self._store.__dict__.get("_secure_before", 0))
            self._store._db.execute(f"PRAGMA secure_delete = {before}")
            # a reader holding the WAL defers the truncation to the next checkpoint
            with contextlib.suppress(sqlite3.Error):
                self._store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
