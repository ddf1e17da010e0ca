"""The embedded metadata store: one SQLite file in WAL mode.

One connection guarded by a lock: the API serves from a thread pool, and SQLite wants
a single writer anyway. WAL lets the CLI read while a server writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tidegate.meta import migrations, registry, subject_sets
from tidegate.meta.base import (
    ApiKeyRow,
    ConsentRow,
    MetadataStore,
    ProductVersion,
    StoredAuditRecord,
)
from tidegate.meta.sql_parts import (
    SQLITE,
    SqlCdcPositions,
    SqlDeadLetters,
    SqlFreshness,
    SqlObservations,
)
from tidegate.meta.sqlite_erasure import SqliteErasureMixin  # erasure: requests/subject_requests.py
from tidegate.meta.sqlite_sync import SqliteSyncMixin
from tidegate.private import private_dir, private_file

BUMP_CHANGE_TOKEN = "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'"


class SqliteMetadataStore(SqliteErasureMixin, SqliteSyncMixin, MetadataStore):
    capabilities = registry.SQLITE

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path, side_files=True, create=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
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
        self._parts = (
            SqlFreshness(self, SQLITE),
            SqlDeadLetters(self, SQLITE),
            SqlObservations(self, SQLITE),
            SqlCdcPositions(self, SQLITE),
        )

    @property
    def freshness(self) -> SqlFreshness:
        return self._parts[0]

    @property
    def dead_letters(self) -> SqlDeadLetters:
        return self._parts[1]

    @property
    def observations(self) -> SqlObservations:
        return self._parts[2]

    @property
    def cdc_positions(self) -> SqlCdcPositions:
        return self._parts[3]

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
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # --- runs and versions
    def start_run(self, kind: str, target: str) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (kind, target, started_at, status) VALUES (?, ?, ?, 'running')",
                (kind, target, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, stats = ?, error = ?"
                " WHERE run_id = ?",
                (time.time(), status, json.dumps(stats, default=str), error, run_id),
            )

    def runs(
        self, kind: str | None = None, target: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT run_id, kind, target, started_at, finished_at, status, stats, error FROM runs"
            " WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR target = ?)"
            " ORDER BY run_id DESC LIMIT ?",
            (kind, kind, target, target, limit),
        )
        keys = ("run_id", "kind", "target", "started_at", "finished_at", "status", "stats", "error")
        result = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["stats"] = json.loads(item["stats"])
            result.append(item)
        return result

    def next_version(self, product: str) -> int:
        rows = self._query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM product_versions WHERE product = ?",
            (product,),
        )
        return int(rows[0][0])

    def publish_version(self, version: ProductVersion) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO product_versions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    version.product,
                    version.version,
                    version.table,
                    version.rows,
                    version.built_at,
                    version.status,
                ),
            )
            if version.status == "live":
                db.execute(
                    "UPDATE product_versions SET status = 'retired'"
                    " WHERE product = ? AND version <> ? AND status = 'live'",
                    (version.product, version.version),
                )
                db.execute(
                    "INSERT OR REPLACE INTO live_versions VALUES (?, ?)",
                    (version.product, version.version),
                )

    def live_version(self, product: str) -> ProductVersion | None:
        rows = self._query(
            "SELECT v.product, v.version, v.table_name, v.rows, v.built_at, v.status"
            " FROM live_versions l JOIN product_versions v"
            " ON v.product = l.product AND v.version = l.version WHERE l.product = ?",
            (product,),
        )
        return ProductVersion(*rows[0]) if rows else None

    def versions(self, product: str) -> list[ProductVersion]:
        rows = self._query(
            "SELECT product, version, table_name, rows, built_at, status FROM product_versions"
            " WHERE product = ? ORDER BY version",
            (product,),
        )
        return [ProductVersion(*row) for row in rows]

    # --- consent
    def append_consent(self, rows: Sequence[ConsentRow]) -> list[int]:
        seqs: list[int] = []
        with self._tx() as db:
            db.execute(BUMP_CHANGE_TOKEN)
            for row in rows:
                cursor = db.execute(
                    "INSERT INTO consent_ledger (subject, purpose, action, occurred_at, source,"
                    " evidence, expires_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.subject,
                        row.purpose,
                        row.action,
                        row.occurred_at,
                        row.source,
                        row.evidence,
                        row.expires_at,
                        row.recorded_at,
                    ),
                )
                seqs.append(int(cursor.lastrowid or 0))
        return seqs

    def consent_history(self, subject: str) -> list[ConsentRow]:
        rows = self._query(
            "SELECT seq, subject, purpose, action, occurred_at, source, evidence, expires_at,"
            " recorded_at FROM consent_ledger WHERE subject = ? ORDER BY seq",
            (subject,),
        )
        return [ConsentRow(*row) for row in rows]

    def consent_rows(self, after_seq: int = 0) -> list[ConsentRow]:
        rows = self._query(
            "SELECT seq, subject, purpose, action, occurred_at, source, evidence, expires_at,"
            " recorded_at FROM consent_ledger WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        return [ConsentRow(*row) for row in rows]

    # --- audit
    # Read as bytes and decoded losslessly: a body edited into invalid UTF-8 (or stored as
    # a BLOB) must reach `verify()`, which names the record, instead of failing the read.
    _AUDIT = (
        "SELECT seq, CAST(body AS BLOB), CAST(prev_hash AS BLOB), CAST(hash AS BLOB) FROM audit_log"
    )

    @staticmethod
    def _audit_row(row: tuple[Any, ...]) -> StoredAuditRecord:
        def text(value: Any) -> str:
            if isinstance(value, bytes):
                return value.decode("utf-8", "surrogateescape")
            return "" if value is None else str(value)

        return StoredAuditRecord(int(row[0]), text(row[1]), text(row[2]), text(row[3]))

    def last_audit(self) -> StoredAuditRecord | None:
        rows = self._query(f"{self._AUDIT} ORDER BY seq DESC LIMIT 1")
        return self._audit_row(rows[0]) if rows else None

    def append_audit_chained(
        self, chain: Callable[[StoredAuditRecord | None], list[StoredAuditRecord]]
    ) -> list[StoredAuditRecord]:
        with self._tx() as db:
            found = db.execute(f"{self._AUDIT} ORDER BY seq DESC LIMIT 1").fetchall()
            records = chain(self._audit_row(found[0]) if found else None)
            self._insert_audit(db, records)
        return records

    def append_audit(self, records: Sequence[StoredAuditRecord]) -> None:
        with self._tx() as db:
            self._insert_audit(db, records)

    def _insert_audit(self, db: sqlite3.Connection, records: Sequence[StoredAuditRecord]) -> None:
        """The records and their subjects: small lists one indexed row per subject, large
        ones as a few text parts, medium ones pending until `subject_sets.fold` (see
        there); the pending lists are folded here when it is time, under this write
        transaction, which no redaction can interleave with."""
        db.executemany(
            "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
            [(r.seq, r.body, r.prev_hash, r.hash) for r in records],
        )
        subject_sets.insert_sets(db.cursor(), SQLITE, records)
        self._insert_index(db, subject_sets.index_rows(records))
        if self._fold_clock.added(records):
            # the pending lists' rows, once deleted, leave no clear key on freed pages
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

    def audit_subject_seqs(self, subject_key: str, subject_type: str | None = None) -> list[int]:
        typed = "" if subject_type is None else " AND subject_type = ?"
        kind = () if subject_type is None else (subject_type,)
        rows = self._query(
            f"SELECT record_seq FROM audit_subjects WHERE subject_key = ?{typed}"
            " UNION SELECT record_seq FROM audit_subject_sets"
            f" WHERE instr(subjects, ?) > 0{typed} ORDER BY record_seq",
            (subject_key, *kind, subject_sets.token(subject_key), *kind),
        )
        return [int(r[0]) for r in rows]

    def redact_audit_subjects(
        self, subject_key: str, subject_type: str | None, pseudonym: str
    ) -> int:
        where = "subject_key = ?" + ("" if subject_type is None else " AND subject_type = ?")
        params = (subject_key,) if subject_type is None else (subject_key, subject_type)
        with self._secure(), self._tx() as db:  # freed pages zeroed: no old key in the file
            cursor = db.execute(
                f"UPDATE OR REPLACE audit_subjects SET subject_key = ? WHERE {where}",
                (pseudonym, *params),
            )
            changed = int(cursor.rowcount)
            return changed + subject_sets.redact(db, SQLITE, subject_key, subject_type, pseudonym)

    def audit_records(
        self, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredAuditRecord]:
        rows = self._query(
            f"{self._AUDIT} WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, -1 if limit is None else limit),
        )
        return [self._audit_row(row) for row in rows]

    # --- audit anchor
    def audit_anchor(self) -> str | None:
        rows = self._query("SELECT body FROM audit_anchor WHERE id = 1")
        return str(rows[0][0]) if rows else None

    def move_audit_anchor(self, body: str, expected: str | None) -> bool:
        with self._tx() as db:
            if expected is None:
                cursor = db.execute(
                    "INSERT INTO audit_anchor VALUES (1, ?) ON CONFLICT (id) DO NOTHING", (body,)
                )
            else:
                cursor = db.execute(
                    "UPDATE audit_anchor SET body = ? WHERE id = 1 AND body = ?", (body, expected)
                )
            return cursor.rowcount > 0

    # --- API keys
    def add_api_key(self, row: ApiKeyRow) -> None:
        with self._tx() as db:
            db.execute(BUMP_CHANGE_TOKEN)
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.key_id,
                    row.secret_hash,
                    row.principal,
                    json.dumps(list(row.roles)),
                    row.created_at,
                    row.expires_at,
                    row.revoked_at,
                ),
            )

    def _key_row(self, row: tuple[Any, ...]) -> ApiKeyRow:
        return ApiKeyRow(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])

    def api_key(self, key_id: str) -> ApiKeyRow | None:
        rows = self._query("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        return self._key_row(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [self._key_row(r) for r in self._query("SELECT * FROM api_keys ORDER BY created_at")]

    def revoke_api_key(self, key_id: str, at: float) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if cursor.rowcount > 0:
                db.execute(BUMP_CHANGE_TOKEN)
            return cursor.rowcount > 0

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
