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

from tidegate.meta.base import (
    ApiKeyRow,
    ConsentRow,
    MetadataStore,
    ProductVersion,
    StoredAuditRecord,
    SubjectLocation,
    SyncedRow,
    SyncRowError,
)
from tidegate.meta.sqlite_erasure import SqliteErasureMixin  # erasure: requests/subject_requests.py

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL, target TEXT NOT NULL,
  started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
  stats TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS product_versions (
  product TEXT NOT NULL, version INTEGER NOT NULL, table_name TEXT NOT NULL,
  rows INTEGER NOT NULL, built_at REAL NOT NULL, status TEXT NOT NULL,
  PRIMARY KEY (product, version)
);
CREATE TABLE IF NOT EXISTS live_versions (
  product TEXT PRIMARY KEY, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_ledger (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  subject TEXT NOT NULL, purpose TEXT NOT NULL, action TEXT NOT NULL,
  occurred_at REAL NOT NULL, source TEXT NOT NULL, evidence TEXT NOT NULL,
  expires_at REAL, recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_by_subject ON consent_ledger (subject, seq);
CREATE INDEX IF NOT EXISTS consent_by_purpose ON consent_ledger (purpose, seq);
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, principal TEXT NOT NULL,
  roles TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL
);
"""

# sync runs (egress/sync): state segments (`sync_segments`), row errors, the in-flight
# batch, suppressions, destinations
SYNC_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_state_segments (
  sync TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, fresh INTEGER NOT NULL,
  rows INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY (sync, seq)
);
CREATE TABLE IF NOT EXISTS sync_inflight_batches (
  sync TEXT PRIMARY KEY, rows INTEGER NOT NULL, body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_targets (
  sync TEXT PRIMARY KEY, destination TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_row_errors (
  sync TEXT NOT NULL, key TEXT NOT NULL, subject TEXT, row_hash TEXT NOT NULL,
  message TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL,
  attempts INTEGER NOT NULL, dismissed_at REAL,
  PRIMARY KEY (sync, key)
);
CREATE TABLE IF NOT EXISTS sync_suppressions (
  sync TEXT NOT NULL, key TEXT NOT NULL, subject TEXT, at REAL NOT NULL,
  PRIMARY KEY (sync, key)
);
"""
SEGMENTS_HARD_LIMIT = 256  # a checkpoint compacts a sync's state past this many segments


class SqliteMetadataStore(SqliteErasureMixin, MetadataStore):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.executescript(SYNC_SCHEMA)
        self._migrate_sync_rows()

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
            db.executemany(
                "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
                [(r.seq, r.body, r.prev_hash, r.hash) for r in records],
            )
        return records

    def append_audit(self, records: Sequence[StoredAuditRecord]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
                [(r.seq, r.body, r.prev_hash, r.hash) for r in records],
            )

    def audit_records(
        self, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredAuditRecord]:
        rows = self._query(
            f"{self._AUDIT} WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, -1 if limit is None else limit),
        )
        return [self._audit_row(row) for row in rows]

    # --- sync state (Arrow segments, see `sync_segments`)
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
                state = seg.rows_table([SyncedRow(*row) for row in rows], time.time())
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

    @staticmethod
    def _append_segment(
        db: sqlite3.Connection, sync: str, kind: str, table: Any, *, fresh: bool
    ) -> None:
        from tidegate.meta.sync_segments import encode

        (seq,) = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM sync_state_segments WHERE sync = ?", (sync,)
        ).fetchone()
        db.execute(
            "INSERT INTO sync_state_segments VALUES (?, ?, ?, ?, ?, ?)",
            (sync, seq, kind, int(fresh), table.num_rows, encode(table)),
        )

    @staticmethod
    def _segments(db: sqlite3.Connection, sync: str) -> list[Any]:
        from tidegate.meta.sync_segments import Segment, decode

        rows = db.execute(
            "SELECT seq, kind, fresh, body FROM sync_state_segments WHERE sync = ? ORDER BY seq",
            (sync,),
        ).fetchall()
        return [Segment(seq, kind, bool(fresh), decode(body)) for seq, kind, fresh, body in rows]

    def synced_state(
        self,
        sync: str,
        keys: Sequence[str] | None = None,
        source_keys: Sequence[str] | None = None,
    ) -> Any:
        from tidegate.meta.sync_segments import fold

        with self._lock:
            segments = self._segments(self._db, sync)
        return fold(segments, keys, source_keys)

    def _compact(self, db: sqlite3.Connection, sync: str) -> None:
        from tidegate.meta.sync_segments import ROWS, fold

        state = fold(self._segments(db, sync))
        db.execute("DELETE FROM sync_state_segments WHERE sync = ?", (sync,))
        if state.num_rows:
            self._append_segment(db, sync, ROWS, state.combine_chunks(), fresh=True)

    def compact_sync_state(self, sync: str, max_segments: int) -> bool:
        with self._tx() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM sync_state_segments WHERE sync = ?", (sync,)
            ).fetchone()
            if count <= max_segments:
                return False
            self._compact(db, sync)
            return True

    def forget_sync(self, sync: str) -> None:
        with self._tx() as db:
            for table in (
                "sync_state_segments",
                "sync_inflight_batches",
                "sync_row_errors",
                "sync_suppressions",
            ):
                db.execute(f"DELETE FROM {table} WHERE sync = ?", (sync,))

    # --- sync runs
    def set_sync_target(self, sync: str, destination: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO sync_targets VALUES (?, ?, ?)",
                (sync, destination, time.time()),
            )

    @staticmethod
    def _state_table(rows: Sequence[SyncedRow] | Any, now: float) -> Any:
        from tidegate.meta import sync_segments as seg

        if hasattr(rows, "schema"):  # an Arrow table
            return seg.conform(rows, now)
        return seg.rows_table(list(rows), now)

    def checkpoint_sync(
        self,
        sync: str,
        *,
        upserted: Sequence[SyncedRow] | Any = (),
        deleted: Sequence[str] = (),
        errors: Sequence[SyncRowError] = (),
        suppressed: Sequence[SyncedRow] = (),
        clear_inflight: bool = False,
        fresh: bool = False,
    ) -> None:
        import pyarrow as pa

        from tidegate.meta.sync_segments import GONE, ROWS

        now = time.time()
        state = self._state_table(upserted, now)  # encoded before the lock is taken
        gone = list(deleted) + [r.key for r in suppressed]
        with self._tx() as db:
            if state.num_rows:
                self._append_segment(db, sync, ROWS, state, fresh=fresh)
            if gone:
                tombstones = pa.table({"key": pa.array(gone, pa.string())})
                self._append_segment(db, sync, GONE, tombstones, fresh=False)
            self._clear_errors(db, sync, state, gone)
            db.executemany(
                "INSERT INTO sync_row_errors (sync, key, subject, row_hash, message, first_at,"
                " last_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (sync, key) DO UPDATE SET subject = excluded.subject,"
                " row_hash = excluded.row_hash, message = excluded.message,"
                " last_at = excluded.last_at, attempts = sync_row_errors.attempts + 1,"
                " dismissed_at = CASE WHEN sync_row_errors.row_hash = excluded.row_hash"
                " THEN sync_row_errors.dismissed_at END",
                [(sync, e.key, e.subject, e.row_hash, e.message, now, now) for e in errors],
            )
            db.executemany(
                "INSERT OR REPLACE INTO sync_suppressions VALUES (?, ?, ?, ?)",
                [(sync, r.key, r.subject, now) for r in suppressed],
            )
            if clear_inflight:
                db.execute("DELETE FROM sync_inflight_batches WHERE sync = ?", (sync,))
            (count,) = db.execute(
                "SELECT count(*) FROM sync_state_segments WHERE sync = ?", (sync,)
            ).fetchone()
            if count > SEGMENTS_HARD_LIMIT:
                self._compact(db, sync)

    @staticmethod
    def _clear_errors(db: sqlite3.Connection, sync: str, state: Any, gone: list[str]) -> None:
        """Errors of keys that were written or deleted are gone (most syncs have none)."""
        open_errors = [
            r[0] for r in db.execute("SELECT key FROM sync_row_errors WHERE sync = ?", (sync,))
        ]
        if not open_errors:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        errored = pa.array(open_errors, pa.string())
        written = state.column("key")
        cleared = written.filter(pc.is_in(written, value_set=errored)).to_pylist()
        cleared += [k for k in gone if k in set(open_errors)]
        db.executemany(
            "DELETE FROM sync_row_errors WHERE sync = ? AND key = ?", [(sync, k) for k in cleared]
        )

    def _put_inflight(
        self, db: sqlite3.Connection, sync: str, rows: Sequence[SyncedRow] | Any
    ) -> None:
        from tidegate.meta.sync_segments import encode

        table = self._state_table(rows, time.time())
        db.execute(
            "INSERT OR REPLACE INTO sync_inflight_batches VALUES (?, ?, ?)",
            (sync, table.num_rows, encode(table)),
        )

    def set_sync_inflight(self, sync: str, rows: Sequence[SyncedRow] | Any) -> None:
        with self._tx() as db:
            self._put_inflight(db, sync, rows)

    def sync_inflight(self, sync: str) -> list[SyncedRow]:
        from tidegate.meta.sync_segments import decode, to_synced_rows

        rows = self._query("SELECT body FROM sync_inflight_batches WHERE sync = ?", (sync,))
        return to_synced_rows(decode(rows[0][0])) if rows else []

    def sync_row_errors(self, sync: str, include_dismissed: bool = False) -> list[SyncRowError]:
        rows = self._query(
            "SELECT key, subject, row_hash, message, first_at, last_at, attempts, dismissed_at"
            " FROM sync_row_errors WHERE sync = ? AND (? OR dismissed_at IS NULL)"
            " ORDER BY last_at DESC, key",
            (sync, include_dismissed),
        )
        return [SyncRowError(*row) for row in rows]

    def dismiss_sync_errors(self, sync: str, keys: Sequence[str] | None, at: float) -> int:
        with self._tx() as db:
            if keys is None:
                cursor = db.execute(
                    "UPDATE sync_row_errors SET dismissed_at = ?"
                    " WHERE sync = ? AND dismissed_at IS NULL",
                    (at, sync),
                )
                return int(cursor.rowcount)
            total = 0
            for key in keys:
                cursor = db.execute(
                    "UPDATE sync_row_errors SET dismissed_at = ?"
                    " WHERE sync = ? AND key = ? AND dismissed_at IS NULL",
                    (at, sync, key),
                )
                total += int(cursor.rowcount)
            return total

    def sync_suppressions(self, sync: str) -> list[SyncedRow]:
        rows = self._query(
            "SELECT key, '', subject, NULL, at FROM sync_suppressions WHERE sync = ? ORDER BY key",
            (sync,),
        )
        return [SyncedRow(*row) for row in rows]

    def subject_locations(self, subject: str) -> list[SubjectLocation]:
        import pyarrow.compute as pc

        from tidegate.meta.sync_segments import ROWS, fold

        found: list[SubjectLocation] = []
        with self._lock:
            targets = dict(self._db.execute("SELECT sync, destination FROM sync_targets"))
            syncs = [
                r[0]
                for r in self._db.execute(
                    "SELECT DISTINCT sync FROM sync_state_segments ORDER BY sync"
                )
            ]
            for sync in syncs:
                segments = self._segments(self._db, sync)
                keys = set()
                for segment in segments:  # candidates first: a cheap filter per segment
                    if segment.kind == ROWS:
                        hits = pc.equal(segment.table.column("subject"), subject)
                        keys.update(segment.table.column("key").filter(hits).to_pylist())
                if not keys:
                    continue
                state = fold(segments, keys=sorted(keys))
                for key, owner, written in zip(
                    state.column("key").to_pylist(),
                    state.column("subject").to_pylist(),
                    state.column("written_at").to_pylist(),
                    strict=True,
                ):
                    if owner == subject:
                        found.append(SubjectLocation(sync, targets.get(sync, ""), key, written))
        return sorted(found, key=lambda loc: (loc.sync, loc.key))

    # --- API keys
    def add_api_key(self, row: ApiKeyRow) -> None:
        with self._tx() as db:
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
            return cursor.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
