"""The embedded metadata store: one SQLite file in WAL mode.

One connection guarded by a lock: the API serves from a thread pool, and SQLite wants
a single writer anyway. WAL lets the CLI read while a server writes. The statements
shared with PostgreSQL are in `sql_core`, `sql_parts` and `sql_sync`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tidegate.meta import migrations, registry, subject_sets
from tidegate.meta.base import MetadataStore
from tidegate.meta.sql_core import SqlCoreMixin
from tidegate.meta.sql_parts import SQLITE
from tidegate.meta.sqlite_erasure import SqliteErasureMixin  # erasure: requests/subject_requests.py
from tidegate.meta.sqlite_sync import SqliteSyncMixin
from tidegate.sqlite_db import immediate, open_private


class SqliteMetadataStore(SqlCoreMixin, SqliteErasureMixin, SqliteSyncMixin, MetadataStore):
    capabilities = registry.SQLITE

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = open_private(self.path)
        self._migrate()
        self._migrate_sync_rows()
        # change detection: a private connection, whose `data_version` moves on any
        # commit by another connection (this store's included); only then is the
        # token row read again
        self._watch_lock = threading.Lock()
        self._watch = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._watch_seen: int | None = None
        self._token = 0
        self._fold_clock = subject_sets.FoldClock()  # when pending audit lists are folded
        self._open_parts()

    def _migrate(self) -> None:
        """Apply the migrations this file lacks (`migrations/sqlite/*.sql`)."""
        table = migrations.VERSION_TABLE
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        if not migrations.pending("sqlite", self._applied()):
            return
        with self._tx() as db:  # BEGIN IMMEDIATE: one process migrates, the others wait
            for migration in migrations.pending("sqlite", self._applied()):
                for statement in migration.statements():
                    db.execute(statement)
                db.execute(
                    f"INSERT INTO {table} VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )

    def _applied(self) -> set[int]:
        table = migrations.VERSION_TABLE
        return {int(r[0]) for r in self._db.execute(f"SELECT version FROM {table}")}

    def where(self) -> str:
        return str(self.path)

    def schema_version(self) -> int:
        with self._lock:
            return max(self._applied(), default=0)

    def change_token(self) -> int:
        with self._watch_lock:
            version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            if version != self._watch_seen:
                self._watch_seen = version
                row = self._watch.execute(
                    "SELECT value FROM meta_heads WHERE name = 'change_token'"
                ).fetchone()
                self._token = int(row[0])
            return self._token

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db) as db:
            yield db

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # --- audit: what SQLite does its own way
    def _fold(self, db: sqlite3.Connection) -> None:
        """Fold the pending lists with `secure_delete` on: their rows, once deleted, leave
        no clear key on freed pages."""
        previous = int(db.execute("PRAGMA secure_delete").fetchone()[0])
        db.execute("PRAGMA secure_delete = ON")
        try:
            subject_sets.fold(db, SQLITE, self._insert_index)
        finally:
            db.execute(f"PRAGMA secure_delete = {previous}")

    @staticmethod
    def _insert_index(db: sqlite3.Connection, rows: Sequence[tuple[str, str, int]]) -> None:
        if rows:
            db.executemany(
                "INSERT OR IGNORE INTO audit_subjects (subject_key, subject_type, record_seq)"
                " VALUES (?, ?, ?)",
                rows,
            )

    def redact_audit_subjects(
        self, subject_key: str, subject_type: str | None, pseudonym: str
    ) -> int:
        where = "subject_key = ?" + ("" if subject_type is None else " AND subject_type = ?")
        params = (subject_key,) if subject_type is None else (subject_key, subject_type)
        with self.erasing(), self._tx() as db:  # freed pages zeroed: no old key in the file
            cursor = db.execute(
                f"UPDATE OR REPLACE audit_subjects SET subject_key = ? WHERE {where}",
                (pseudonym, *params),
            )
            changed = int(cursor.rowcount)
            return changed + subject_sets.redact(db, SQLITE, subject_key, subject_type, pseudonym)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._watch_lock:
            self._watch.close()


def sqlite_part(path: Path | str, name: str) -> Any:
    """One part (`freshness`, `dead_letters`, `observations`, `cdc_positions`) of the
    metadata file at `path`, opened on its own: closing it closes the file (tools, tests)."""
    from tidegate.meta.parts import owning

    store = SqliteMetadataStore(path)
    return owning(getattr(store, name), store)
