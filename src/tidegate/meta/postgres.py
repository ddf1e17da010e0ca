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

The statements shared with SQLite are in `sql_core`, `sql_parts` and `sql_sync`; this
module opens the pool, migrates, and writes what PostgreSQL does its own way. Tables
live in their own schema (`backends.metadata.schema`, default `tidegate`),
created and migrated on open (`migrations/postgres/*.sql`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tidegate.errors import TidegateError
from tidegate.meta import migrations, registry, subject_sets
from tidegate.meta.base import MetadataStore
from tidegate.meta.postgres_pool import Pool
from tidegate.meta.postgres_sync import PostgresSyncMixin
from tidegate.meta.sql_core import SqlCoreMixin
from tidegate.meta.sql_erasure import SqlErasureMixin
from tidegate.meta.sql_parts import POSTGRES

log = logging.getLogger(__name__)

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


def _where(dsn: str, schema: str) -> str:
    """Host, port, database and schema of a DSN: never its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN fails at connect, with psycopg's own message
        info = {}
    host, port, db = info.get("host", "localhost"), info.get("port", 5432), info.get("dbname", "")
    return f"PostgreSQL {host}:{port}/{db} schema {schema}"


class PostgresMetadataStore(SqlCoreMixin, SqlErasureMixin, PostgresSyncMixin, MetadataStore):
    capabilities = registry.POSTGRES

    def __init__(self, dsn: str, schema: str = "tidegate", pool_size: int = 4) -> None:
        self.schema = schema
        self._where = _where(dsn, schema)
        self._pool = Pool(dsn, pool_size, schema)
        self._fold_clock = subject_sets.FoldClock()  # when pending audit lists are folded
        self._migrate()
        self._open_parts()

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

    def close(self) -> None:
        self._pool.close()

    # ---------------------------------------------------------------- audit index

    @staticmethod
    def _insert_index(conn: Any, rows: Sequence[tuple[str, str, int]]) -> None:
        if rows:
            conn.execute(
                "INSERT INTO audit_subjects (subject_key, subject_type, record_seq)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
                " ON CONFLICT DO NOTHING",
                tuple(list(column) for column in zip(*rows, strict=True)),
            )

    def redact_audit_subjects(
        self, subject_key: str, subject_type: str | None, pseudonym: str
    ) -> int:
        where = "subject_key = %s" + ("" if subject_type is None else " AND subject_type = %s")
        params = (subject_key,) if subject_type is None else (subject_key, subject_type)
        with self._tx() as conn:
            self._lock_audit(conn)  # no fold of pending lists in the middle of this
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
