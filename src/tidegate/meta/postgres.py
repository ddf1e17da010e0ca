"""The metadata store on PostgreSQL: many processes, and machines, writing one project.

Same contract as the SQLite store (`base.MetadataStore`). Where concurrent writers
could collide, a transaction first locks a row that serialises them:

* consent, API-key and tombstone writes lock and bump `meta_heads['change_token']`
  before inserting, so ledger seqs commit in the order they are numbered (a reader
  asking for `seq > n` never misses a row committed later with a smaller seq), and
  the serving caches see the new token in the same commit as the change;
* a chained audit append locks `meta_heads['audit']` (SELECT ... FOR UPDATE), reads
  the head, chains and inserts: two processes never take the same seq;
* a sync's state segments are numbered under a transaction-scoped advisory lock of
  that sync.

Tables live in their own schema (`backends.metadata.schema`, default `tidegate`),
created and migrated on open (`migrations/postgres/*.sql`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tidegate.errors import TidegateError
from tidegate.meta import migrations, registry, subject_sets
from tidegate.meta.base import (
    ApiKeyRow,
    ConsentRow,
    MetadataStore,
    ProductVersion,
    StoredAuditRecord,
)
from tidegate.meta.postgres_erasure import PostgresErasureMixin
from tidegate.meta.postgres_pool import Pool
from tidegate.meta.postgres_sync import PostgresSyncMixin
from tidegate.meta.sql_parts import (
    POSTGRES,
    SqlCdcPositions,
    SqlDeadLetters,
    SqlFreshness,
    SqlObservations,
)

log = logging.getLogger(__name__)

BUMP_CHANGE_TOKEN = (
    "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token' RETURNING value"
)
_MIGRATION_LOCK = 0x7469646567617465  # "tidegate": the advisory lock of migrations


def dsn_of(config: Any) -> str:
    """The DSN from the config, or from the environment variable it names."""
    if config.dsn:
        return str(config.dsn)
    value = os.environ.get(config.dsn_env or "", "")
    if not value:
        raise TidegateError(
            f"backends.metadata: environment variable {config.dsn_env} is unset or empty"
        )
    return value


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _where(dsn: str, schema: str) -> str:
    """Host, port, database and schema of a DSN: never its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN fails at connect, with psycopg's own message
        info = {}
    host, port, db = info.get("host", "localhost"), info.get("port", 5432), info.get("dbname", "")
    return f"PostgreSQL {host}:{port}/{db} schema {schema}"


#: the audit's write lock: appends (and the folds they run) and redactions take it
_AUDIT_LOCK = "SELECT value FROM meta_heads WHERE name = 'audit' FOR UPDATE"


class PostgresMetadataStore(PostgresErasureMixin, PostgresSyncMixin, MetadataStore):
    capabilities = registry.POSTGRES

    def __init__(self, dsn: str, schema: str = "tidegate", pool_size: int = 4) -> None:
        self.schema = schema
        self._where = _where(dsn, schema)
        self._pool = Pool(dsn, pool_size, schema)
        self._fold_clock = subject_sets.FoldClock()  # when pending audit lists are folded
        self._migrate()
        self._parts = (
            SqlFreshness(self, POSTGRES),
            SqlDeadLetters(self, POSTGRES),
            SqlObservations(self, POSTGRES),
            SqlCdcPositions(self, POSTGRES),
        )

    @classmethod
    def from_config(cls, config: Any) -> PostgresMetadataStore:
        return cls(dsn_of(config), config.schema_name, config.pool_size)

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A connection inside one transaction (committed on leaving, rolled back on error)."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def _migrate(self) -> None:
        table = migrations.VERSION_TABLE
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            found = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if found is None:  # created only when missing: a role may use a schema it cannot create
                from psycopg import sql

                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            applied = {int(r[0]) for r in conn.execute(f"SELECT version FROM {table}")}
            for migration in migrations.pending("postgres", applied):
                log.info("metadata schema %s: migration %s", self.schema, migration.version)
                conn.execute(migration.sql)
                conn.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s)",
                    (migration.version, migration.name, time.time()),
                )

    def where(self) -> str:
        return self._where

    def schema_version(self) -> int:
        rows = self._query(f"SELECT max(version) FROM {migrations.VERSION_TABLE}")
        return int(rows[0][0] or 0)

    def change_token(self) -> int:
        rows = self._query("SELECT value FROM meta_heads WHERE name = 'change_token'")
        return int(rows[0][0])

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

    def close(self) -> None:
        self._pool.close()

    # ---------------------------------------------------------------- runs and versions

    def start_run(self, kind: str, target: str) -> int:
        rows = self._query(
            "INSERT INTO runs (kind, target, started_at, status) VALUES (%s, %s, %s, 'running')"
            " RETURNING run_id",
            (kind, target, time.time()),
        )
        return int(rows[0][0])

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], error: str = "") -> None:
        self._query(
            "UPDATE runs SET finished_at = %s, status = %s, stats = %s, error = %s"
            " WHERE run_id = %s",
            (time.time(), status, json.dumps(stats, default=str), error, run_id),
        )

    def runs(
        self, kind: str | None = None, target: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT run_id, kind, target, started_at, finished_at, status, stats, error FROM runs"
            " WHERE (%s::text IS NULL OR kind = %s) AND (%s::text IS NULL OR target = %s)"
            " ORDER BY run_id DESC LIMIT %s",
            (kind, kind, target, target, limit),
        )
        keys = ("run_id", "kind", "target", "started_at", "finished_at", "status", "stats", "error")
        result = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["stats"] = json.loads(item["stats"])
            result.append(item)
        return result

    def finished_runs(self) -> list[tuple[str, str, str, float]]:
        rows = self._query(
            "SELECT kind, target, status, finished_at - started_at FROM runs"
            " WHERE finished_at IS NOT NULL"
        )
        return [(str(k), str(t), str(s), float(d)) for k, t, s, d in rows]

    def next_version(self, product: str) -> int:
        rows = self._query(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM product_versions WHERE product = %s",
            (product,),
        )
        return int(rows[0][0])

    def publish_version(self, version: ProductVersion) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO product_versions VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (product, version) DO UPDATE SET table_name = excluded.table_name,"
                " rows = excluded.rows, built_at = excluded.built_at, status = excluded.status",
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
                    "UPDATE product_versions SET status = 'retired'"
                    " WHERE product = %s AND version <> %s AND status = 'live'",
                    (version.product, version.version),
                )
                conn.execute(
                    "INSERT INTO live_versions VALUES (%s, %s)"
                    " ON CONFLICT (product) DO UPDATE SET version = excluded.version",
                    (version.product, version.version),
                )

    def live_version(self, product: str) -> ProductVersion | None:
        rows = self._query(
            "SELECT v.product, v.version, v.table_name, v.rows, v.built_at, v.status"
            " FROM live_versions l JOIN product_versions v"
            " ON v.product = l.product AND v.version = l.version WHERE l.product = %s",
            (product,),
        )
        return ProductVersion(*rows[0]) if rows else None

    def versions(self, product: str) -> list[ProductVersion]:
        rows = self._query(
            "SELECT product, version, table_name, rows, built_at, status FROM product_versions"
            " WHERE product = %s ORDER BY version",
            (product,),
        )
        return [ProductVersion(*row) for row in rows]

    # ---------------------------------------------------------------- consent

    _CONSENT = (
        "SELECT seq, subject, purpose, action, occurred_at, source, evidence, expires_at,"
        " recorded_at FROM consent_ledger"
    )

    def append_consent(self, rows: Sequence[ConsentRow]) -> list[int]:
        if not rows:
            return []
        seqs: list[int] = []
        with self._tx() as conn:
            conn.execute(BUMP_CHANGE_TOKEN)  # first: serialises writers, so seqs commit in order
            with conn.cursor() as cur:
                for row in rows:
                    cur.execute(
                        "INSERT INTO consent_ledger (subject, purpose, action, occurred_at,"
                        " source, evidence, expires_at, recorded_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
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
                    found = cur.fetchone()
                    seqs.append(int(found[0]) if found else 0)
        return seqs

    def consent_history(self, subject: str) -> list[ConsentRow]:
        rows = self._query(f"{self._CONSENT} WHERE subject = %s ORDER BY seq", (subject,))
        return [ConsentRow(*row) for row in rows]

    def consent_rows(self, after_seq: int = 0) -> list[ConsentRow]:
        rows = self._query(f"{self._CONSENT} WHERE seq > %s ORDER BY seq", (after_seq,))
        return [ConsentRow(*row) for row in rows]

    # ---------------------------------------------------------------- audit

    _AUDIT = "SELECT seq, body, prev_hash, hash FROM audit_log"

    @staticmethod
    def _audit_row(row: Sequence[Any]) -> StoredAuditRecord:
        return StoredAuditRecord(int(row[0]), _text(row[1]), _text(row[2]), _text(row[3]))

    def _insert_audit(self, conn: Any, records: Sequence[StoredAuditRecord]) -> None:
        """The records and their subjects: small lists one indexed row per subject, large
        ones as a few text parts, medium ones pending until `subject_sets.fold` (see
        there), folded here when it is time, under the audit head's row lock, which a
        redaction takes too."""
        if not records:
            return
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (%s, %s, %s, %s)",
                [(r.seq, _bytes(r.body), r.prev_hash, r.hash) for r in records],
            )
            subject_sets.insert_sets(cur, POSTGRES, records)
        self._insert_index(conn, subject_sets.index_rows(records))
        if self._fold_clock.added(records):
            subject_sets.fold(conn, POSTGRES, self._insert_index)

    @staticmethod
    def _insert_index(conn: Any, rows: Sequence[tuple[str, str, int]]) -> None:
        if rows:
            conn.execute(
                "INSERT INTO audit_subjects (subject_key, subject_type, record_seq)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
                " ON CONFLICT DO NOTHING",
                tuple(list(column) for column in zip(*rows, strict=True)),
            )

    def audit_subject_seqs(self, subject_key: str, subject_type: str | None = None) -> list[int]:
        typed = "" if subject_type is None else " AND subject_type = %s"
        kind = () if subject_type is None else (subject_type,)
        rows = self._query(
            f"SELECT record_seq FROM audit_subjects WHERE subject_key = %s{typed}"
            " UNION SELECT record_seq FROM audit_subject_sets"
            f" WHERE strpos(subjects, %s) > 0{typed} ORDER BY record_seq",
            (subject_key, *kind, subject_sets.token(subject_key), *kind),
        )
        return [int(r[0]) for r in rows]

    def redact_audit_subjects(
        self, subject_key: str, subject_type: str | None, pseudonym: str
    ) -> int:
        where = "subject_key = %s" + ("" if subject_type is None else " AND subject_type = %s")
        params = (subject_key,) if subject_type is None else (subject_key, subject_type)
        with self._tx() as conn:
            conn.execute(_AUDIT_LOCK)  # no fold of pending lists in the middle of this
            # an entry already under the pseudonym (a second erasure) is a duplicate: drop it
            conn.execute(
                f"DELETE FROM audit_subjects a WHERE {where.replace('subject_', 'a.subject_')}"
                " AND EXISTS (SELECT 1 FROM audit_subjects b WHERE b.subject_key = %s"
                " AND b.subject_type = a.subject_type AND b.record_seq = a.record_seq)",
                (*params, pseudonym),
            )
            cursor = conn.execute(
                f"UPDATE audit_subjects SET subject_key = %s WHERE {where}", (pseudonym, *params)
            )
            changed = int(cursor.rowcount)
            return changed + subject_sets.redact(
                conn, POSTGRES, subject_key, subject_type, pseudonym
            )

    def last_audit(self) -> StoredAuditRecord | None:
        rows = self._query(f"{self._AUDIT} ORDER BY seq DESC LIMIT 1")
        return self._audit_row(rows[0]) if rows else None

    def append_audit_chained(
        self, chain: Callable[[StoredAuditRecord | None], list[StoredAuditRecord]]
    ) -> list[StoredAuditRecord]:
        with self._tx() as conn:
            conn.execute(_AUDIT_LOCK)
            found = conn.execute(f"{self._AUDIT} ORDER BY seq DESC LIMIT 1").fetchall()
            records = chain(self._audit_row(found[0]) if found else None)
            self._insert_audit(conn, records)
            if records:
                conn.execute(
                    "UPDATE meta_heads SET value = %s WHERE name = 'audit'", (records[-1].seq,)
                )
        return records

    def append_audit(self, records: Sequence[StoredAuditRecord]) -> None:
        with self._tx() as conn:
            conn.execute(_AUDIT_LOCK)  # a fold and a redaction never interleave
            self._insert_audit(conn, records)

    def audit_records(
        self, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredAuditRecord]:
        rows = self._query(
            f"{self._AUDIT} WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit)
        )
        return [self._audit_row(row) for row in rows]

    # ---------------------------------------------------------------- audit anchor

    def audit_anchor(self) -> str | None:
        rows = self._query("SELECT body FROM audit_anchor WHERE id = 1")
        return str(rows[0][0]) if rows else None

    def move_audit_anchor(self, body: str, expected: str | None) -> bool:
        with self._tx() as conn:
            if expected is None:
                cursor = conn.execute(
                    "INSERT INTO audit_anchor VALUES (1, %s) ON CONFLICT (id) DO NOTHING", (body,)
                )
            else:
                cursor = conn.execute(
                    "UPDATE audit_anchor SET body = %s WHERE id = 1 AND body = %s",
                    (body, expected),
                )
            return bool(cursor.rowcount > 0)

    # ---------------------------------------------------------------- API keys

    def add_api_key(self, row: ApiKeyRow) -> None:
        with self._tx() as conn:
            conn.execute(BUMP_CHANGE_TOKEN)
            conn.execute(
                "INSERT INTO api_keys VALUES (%s, %s, %s, %s, %s, %s, %s)",
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

    @staticmethod
    def _key_row(row: Sequence[Any]) -> ApiKeyRow:
        return ApiKeyRow(row[0], row[1], row[2], tuple(json.loads(row[3])), *row[4:])

    _KEYS = (
        "SELECT key_id, secret_hash, principal, roles, created_at, expires_at, revoked_at"
        " FROM api_keys"
    )

    def api_key(self, key_id: str) -> ApiKeyRow | None:
        rows = self._query(f"{self._KEYS} WHERE key_id = %s", (key_id,))
        return self._key_row(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKeyRow]:
        return [self._key_row(r) for r in self._query(f"{self._KEYS} ORDER BY created_at")]

    def revoke_api_key(self, key_id: str, at: float) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (at, key_id),
            )
            if cursor.rowcount > 0:
                conn.execute(BUMP_CHANGE_TOKEN)
            return bool(cursor.rowcount > 0)
