"""Runs, product versions, consent, audit, the audit anchor and API keys of a SQL
metadata store, written once for SQLite and PostgreSQL.

A mixin of both stores, like `sql_sync.SqlSyncMixin`: it needs their `_tx` (a connection
inside one transaction), `_query` (one statement), `_dialect` (`sql_parts.SqlDialect`)
and, for the audit, `_insert_index` (how a backend writes many index rows fast) and
`_fold_clock`. Statements are written with `?`; what differs between the databases is
data in the dialect (the parameter mark, the substring search, the audit's row lock and
column types). Generated ids come back through `RETURNING` on both (SQLite >= 3.35).

Consent and API-key writes bump `meta_heads['change_token']` first: on PostgreSQL that
row lock serialises writers, so ledger seqs commit in the order they are numbered, and
the serving caches see the new token in the same commit as the change.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta import subject_sets
from tidegate.meta.base import ApiKeyRow, ConsentRow, ProductVersion, StoredAuditRecord
from tidegate.meta.sql_parts import (
    SqlCdcPositions,
    SqlDeadLetters,
    SqlFreshness,
    SqlObservations,
    SqlStore,
)

BUMP_CHANGE_TOKEN = "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'"

_RUN_KEYS = ("run_id", "kind", "target", "started_at", "finished_at", "status", "stats", "error")
_CONSENT = (
    "SELECT seq, subject, purpose, action, occurred_at, source, evidence, expires_at,"
    " recorded_at FROM consent_ledger"
)
_KEYS = (
    "SELECT key_id, secret_hash, principal, roles, created_at, expires_at, revoked_at FROM api_keys"
)


def text_of(value: Any) -> str:
    """A stored text column read as bytes (or memoryview), decoded losslessly."""
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _audit_row(row: Sequence[Any]) -> StoredAuditRecord:
    return StoredAuditRecord(int(row[0]), text_of(row[1]), text_of(row[2]), text_of(row[3]))


def _key_row(row: Sequence[Any]) -> ApiKeyRow:
    return ApiKeyRow(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])


def returned_id(conn: Any, statement: str, params: Sequence[Any]) -> int:
    """The id an `INSERT ... RETURNING` gave its row (read to the end: SQLite keeps
    a write statement open, and its transaction uncommittable, until then). `conn`: a
    connection or a cursor of either driver."""
    found = conn.execute(statement, params).fetchall()
    return int(found[0][0]) if found else 0


class SqlCoreMixin(SqlStore):
    _fold_clock: subject_sets.FoldClock
    _parts: tuple[SqlFreshness, SqlDeadLetters, SqlObservations, SqlCdcPositions]
    erasing: Callable[[], AbstractContextManager[None]]

    def _open_parts(self) -> None:
        """The parts (`sql_parts`) on this store's transactions, in this store's dialect."""
        self._parts = (
            SqlFreshness(self, self._dialect),
            SqlDeadLetters(self, self._dialect),
            SqlObservations(self, self._dialect),
            SqlCdcPositions(self, self._dialect),
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

    # --- runs and versions
    def start_run(self, kind: str, target: str) -> int:
        with self._tx() as conn:
            return returned_id(
                conn,
                self._sql(
                    "INSERT INTO runs (kind, target, started_at, status)"
                    " VALUES (?, ?, ?, 'running') RETURNING run_id"
                ),
                (kind, target, time.time()),
            )

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str = "") -> None:
        with self._tx() as conn:
            conn.execute(
                self._sql(
                    "UPDATE runs SET finished_at = ?, status = ?, stats = ?, error = ?"
                    " WHERE run_id = ?"
                ),
                (time.time(), status, json.dumps(stats, default=str), error, run_id),
            )

    def runs(
        self, kind: str | None = None, target: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join(_RUN_KEYS)} FROM runs"
            " WHERE (CAST(? AS TEXT) IS NULL OR kind = ?)"
            " AND (CAST(? AS TEXT) IS NULL OR target = ?)"
            " ORDER BY run_id DESC LIMIT ?",
            (kind, kind, target, target, limit),
        )
        result = []
        for row in rows:
            item = dict(zip(_RUN_KEYS, row, strict=True))
            item["stats"] = json.loads(item["stats"])
            result.append(item)
        return result

    def finished_runs(self) -> list[tuple[str, str, str, float]]:
        """(kind, target, status, seconds) of every finished run (metrics), newest first."""
        rows = self._read(
            "SELECT kind, target, status, finished_at - started_at FROM runs"
            " WHERE finished_at IS NOT NULL ORDER BY run_id DESC"
        )
        return [(str(k), str(t), str(s), float(d)) for k, t, s, d in rows]

    def next_version(self, product: str) -> int:
        rows = self._read(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM product_versions WHERE product = ?",
            (product,),
        )
        return int(rows[0][0])

    def publish_version(self, version: ProductVersion) -> None:
        with self._tx() as conn:
            conn.execute(
                self._sql(
                    "INSERT INTO product_versions VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (product, version) DO UPDATE SET"
                    " table_name = excluded.table_name, rows = excluded.rows,"
                    " built_at = excluded.built_at, status = excluded.status"
                ),
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
                conn.execute(
                    self._sql(
                        "UPDATE product_versions SET status = 'retired'"
                        " WHERE product = ? AND version <> ? AND status = 'live'"
                    ),
                    (version.product, version.version),
                )
                conn.execute(
                    self._sql(
                        "INSERT INTO live_versions VALUES (?, ?)"
                        " ON CONFLICT (product) DO UPDATE SET version = excluded.version"
                    ),
                    (version.product, version.version),
                )

    def live_version(self, product: str) -> ProductVersion | None:
        rows = self._read(
            "SELECT v.product, v.version, v.table_name, v.rows, v.built_at, v.status"
            " FROM live_versions l JOIN product_versions v"
            " ON v.product = l.product AND v.version = l.version WHERE l.product = ?",
            (product,),
        )
        return ProductVersion(*rows[0]) if rows else None

    def versions(self, product: str) -> list[ProductVersion]:
        rows = self._read(
            "SELECT product, version, table_name, rows, built_at, status FROM product_versions"
            " WHERE product = ? ORDER BY version",
            (product,),
        )
        return [ProductVersion(*row) for row in rows]

    # --- consent
    def append_consent(self, rows: Sequence[ConsentRow]) -> list[int]:
        if not rows:
            return []
        insert = self._sql(
            "INSERT INTO consent_ledger (subject, purpose, action, occurred_at, source,"
            " evidence, expires_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq"
        )
        with self._tx() as conn:
            conn.execute(BUMP_CHANGE_TOKEN)  # first: serialises writers, so seqs commit in order
            cursor = conn.cursor()  # one for the batch (a consent import is many rows)
            try:
                return [
                    returned_id(
                        cursor,
                        insert,
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
                    for row in rows
                ]
            finally:
                cursor.close()

    def consent_history(self, subject: str) -> list[ConsentRow]:
        rows = self._read(f"{_CONSENT} WHERE subject = ? ORDER BY seq", (subject,))
        return [ConsentRow(*row) for row in rows]

    def consent_rows(self, after_seq: int = 0) -> list[ConsentRow]:
        rows = self._read(f"{_CONSENT} WHERE seq > ? ORDER BY seq", (after_seq,))
        return [ConsentRow(*row) for row in rows]

    # --- audit
    @property
    def _audit_select(self) -> str:
        b = self._dialect.as_bytes.format
        return f"SELECT seq, {b('body')}, {b('prev_hash')}, {b('hash')} FROM audit_log"

    def _stored_body(self, body: str) -> str | bytes:
        return body.encode("utf-8", "surrogateescape") if self._dialect.body_bytes else body

    def _lock_audit(self, conn: Any) -> None:
        """The audit's write lock, where the database needs one taken (see the dialect)."""
        if self._dialect.audit_lock:
            conn.execute(self._dialect.audit_lock)

    @abstractmethod
    def _insert_index(self, conn: Any, rows: Sequence[tuple[str, str, int]]) -> None:
        """Write many audit index rows, each store its fastest way (PostgreSQL one
        `unnest` statement, SQLite `executemany`); a store that lacks it cannot be built
        (the metadata stores are ABCs)."""

    def _fold(self, conn: Any) -> None:
        """Fold the pending subject lists (`subject_sets.fold`)."""
        subject_sets.fold(conn, self._dialect, self._insert_index)

    def _insert_audit(self, conn: Any, records: Sequence[StoredAuditRecord]) -> None:
        """The records and their subjects: small lists one indexed row per subject, large
        ones as a few text parts, medium ones pending until `subject_sets.fold` (see
        there), folded here when it is time, under the audit's write lock (PostgreSQL's
        head row lock, SQLite's exclusive write transaction), which a redaction takes too."""
        if not records:
            return
        cursor = conn.cursor()
        try:
            cursor.executemany(
                self._sql("INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)"),
                [(r.seq, self._stored_body(r.body), r.prev_hash, r.hash) for r in records],
            )
            subject_sets.insert_sets(cursor, self._dialect, records)
        finally:
            cursor.close()
        self._insert_index(conn, subject_sets.index_rows(records))
        if self._fold_clock.added(records):
            self._fold(conn)

    def audit_subject_seqs(self, subject_key: str, subject_type: str | None = None) -> list[int]:
        typed = "" if subject_type is None else " AND subject_type = ?"
        kind = () if subject_type is None else (subject_type,)
        rows = self._read(
            f"SELECT record_seq FROM audit_subjects WHERE subject_key = ?{typed}"
            " UNION SELECT record_seq FROM audit_subject_sets"
            f" WHERE {self._dialect.find}(subjects, ?) > 0{typed} ORDER BY record_seq",
            (subject_key, *kind, subject_sets.token(subject_key), *kind),
        )
        return [int(r[0]) for r in rows]

    def last_audit(self) -> StoredAuditRecord | None:
        rows = self._query(f"{self._audit_select} ORDER BY seq DESC LIMIT 1")
        return _audit_row(rows[0]) if rows else None

    def append_audit_chained(
        self, chain: Callable[[StoredAuditRecord | None], list[StoredAuditRecord]]
    ) -> list[StoredAuditRecord]:
        with self._tx() as conn:
            self._lock_audit(conn)
            found = conn.execute(f"{self._audit_select} ORDER BY seq DESC LIMIT 1").fetchall()
            records = chain(_audit_row(found[0]) if found else None)
            self._insert_audit(conn, records)
            if records and self._dialect.audit_lock:  # the locked head row tracks the last seq
                conn.execute(
                    self._sql("UPDATE meta_heads SET value = ? WHERE name = 'audit'"),
                    (records[-1].seq,),
                )
        return records

    def append_audit(self, records: Sequence[StoredAuditRecord]) -> None:
        with self._tx() as conn:
            self._lock_audit(conn)  # a fold and a redaction never interleave
            self._insert_audit(conn, records)

    def audit_records(
        self, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredAuditRecord]:
        bounded = "" if limit is None else " LIMIT ?"
        rows = self._read(
            f"{self._audit_select} WHERE seq > ? ORDER BY seq{bounded}",
            (after_seq,) if limit is None else (after_seq, limit),
        )
        return [_audit_row(row) for row in rows]

    # --- audit anchor
    def audit_anchor(self) -> str | None:
        rows = self._query("SELECT body FROM audit_anchor WHERE id = 1")
        return str(rows[0][0]) if rows else None

    def move_audit_anchor(self, body: str, expected: str | None) -> bool:
        with self._tx() as conn:
            if expected is None:
                cursor = conn.execute(
                    self._sql("INSERT INTO audit_anchor VALUES (1, ?) ON CONFLICT (id) DO NOTHING"),
                    (body,),
                )
            else:
                cursor = conn.execute(
                    self._sql("UPDATE audit_anchor SET body = ? WHERE id = 1 AND body = ?"),
                    (body, expected),
                )
            return bool(cursor.rowcount > 0)

    # --- API keys
    def add_api_key(self, row: ApiKeyRow) -> None:
        with self._tx() as conn:
            conn.execute(BUMP_CHANGE_TOKEN)
            conn.execute(
                self._sql("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)"),
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

    def api_key(self, key_id: str) -> ApiKeyRow | None:
        rows = self._read(f"{_KEYS} WHERE key_id = ?", (key_id,))
        return _key_row(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [_key_row(r) for r in self._query(f"{_KEYS} ORDER BY created_at")]

    def revoke_api_key(self, key_id: str, at: float) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                self._sql(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"
                ),
                (at, key_id),
            )
            if cursor.rowcount > 0:
                conn.execute(BUMP_CHANGE_TOKEN)
            return bool(cursor.rowcount > 0)
