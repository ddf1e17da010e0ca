"""The parts of a SQL metadata store (`parts.py`): freshness, dead letters, observations,
CDC positions, written once for SQLite and PostgreSQL.

The two stores share the tables (their migrations create them) and almost every
statement; what differs is data in a `SqlDialect`: the parameter mark, the name of the
two-argument maximum, the column that orders rows by insertion, the names of the dead
letters' log-position columns and the row lock a read-then-write takes. Each part
borrows its store's transactions (`_tx`) and reads (`_query`); where two processes could
race (alert deduplication, dead letters of one log position), one statement or one
locked row inside one transaction decides.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from tidegate.meta.parts import (
    QUALITY_COLUMNS,
    CdcPositionStore,
    DeadLetter,
    DeadLetterStore,
    Freshness,
    FreshnessStore,
    ObservationStore,
    Point,
    SchemaSnapshot,
    SlotState,
)


@dataclass(frozen=True)
class SqlDialect:
    """What a part's SQL needs to know about its database."""

    #: the DB-API parameter mark (statements are written with `?`)
    param: str
    #: the scalar maximum of two values (SQLite `max`, PostgreSQL `greatest`)
    greatest: str
    #: the column that orders rows as they were inserted
    insertion_order: str
    #: the dead letters' log position columns (PostgreSQL reserves `offset`)
    partition_column: str
    offset_column: str
    #: appended to a SELECT whose row the transaction then updates (SQLite's write
    #: transactions are already exclusive)
    lock_row: str
    #: taken first by a transaction that appends a sync's state segments, with the
    #: sync's name as its parameter ("": the write transaction is exclusive already)
    sync_lock: str = ""
    #: the position of a substring in a string, 0 when absent (SQLite `instr`,
    #: PostgreSQL `strpos`)
    find: str = "instr"
    #: taken first by an audit append or redaction, serialising them ("": the write
    #: transaction is exclusive already); when set, the head row it locks also tracks
    #: the last audit seq
    audit_lock: str = ""
    #: audit bodies are stored as bytes (PostgreSQL `bytea`), not text
    body_bytes: bool = False
    #: an audit column read as bytes, decoded losslessly after: a body edited into
    #: invalid UTF-8 (or stored as a BLOB) reaches `verify()`, which names the record,
    #: instead of failing the read (PostgreSQL's text cannot hold invalid UTF-8)
    as_bytes: str = "CAST({} AS BLOB)"
    #: the names of the tables that exist
    tables: str = "SELECT name FROM sqlite_master WHERE type = 'table'"

    def sql(self, statement: str) -> str:
        return statement if self.param == "?" else statement.replace("?", self.param)


SQLITE = SqlDialect("?", "max", "rowid", "partition", "offset", "")
POSTGRES = SqlDialect(
    "%s",
    "greatest",
    "id",
    "log_partition",
    "log_offset",
    " FOR UPDATE",
    "SELECT pg_advisory_xact_lock(hashtext('tidegate.sync:' || ?))",
    find="strpos",
    audit_lock="SELECT value FROM meta_heads WHERE name = 'audit' FOR UPDATE",
    body_bytes=True,
    as_bytes="{}",
    tables="SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
)


class SqlStore:
    """What the SQL mixins of a store (`sql_core`, `sql_sync`, `sql_erasure`) share: the
    store's `_tx` (a connection inside one transaction), `_query` (one statement) and
    `_dialect`, and statements written with `?` run through them."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[tuple[Any, ...]]]
    _dialect: SqlDialect

    def _sql(self, statement: str) -> str:
        return self._dialect.sql(statement)

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(self._sql(statement), params)

    def _many(
        self, conn: Any, statement: str, rows: Sequence[Sequence[Any]], *, count: bool = False
    ) -> int:
        """`statement` once per row inside the caller's transaction; with `count`, the
        rows it changed (one statement at a time: the rowcount both drivers report
        alike), else in one batch (psycopg pipelines it)."""
        if not rows:
            return 0
        if count:
            return sum(int(conn.execute(self._sql(statement), row).rowcount) for row in rows)
        cursor = conn.cursor()
        try:
            cursor.executemany(self._sql(statement), rows)
        finally:
            cursor.close()
        return len(rows)


class SqlOwner(Protocol):
    """The store a part belongs to."""

    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def erasing(self) -> AbstractContextManager[None]: ...


class _SqlPart:
    def __init__(self, owner: SqlOwner, dialect: SqlDialect) -> None:
        self._s = owner
        self._d = dialect

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._s._query(self._d.sql(statement), params)

    def _write(self, statement: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; the rows it changed."""
        with self._s._tx() as db:
            return int(db.execute(self._d.sql(statement), params).rowcount)

    def _write_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> int:
        """One statement per row, all in one transaction; the rows they changed."""
        if not rows:
            return 0
        with self._s._tx() as db:
            cursor = db.cursor()
            try:
                cursor.executemany(self._d.sql(statement), rows)
                return int(cursor.rowcount)
            finally:
                cursor.close()


class SqlFreshness(_SqlPart, FreshnessStore):
    def updated(self, product: str, mode: str, lag: float, slo: float) -> None:
        self._write(
            "INSERT INTO product_freshness AS f (product, mode, last_update, last_lag, max_lag,"
            " updates, breaches, stale_since) VALUES (?, ?, ?, ?, ?, 1, ?, NULL)"
            " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
            " last_update = excluded.last_update, last_lag = excluded.last_lag,"
            f" max_lag = {self._d.greatest}(f.max_lag, excluded.last_lag),"
            " updates = f.updates + 1, breaches = f.breaches + excluded.breaches,"
            " stale_since = NULL",
            (product, mode, time.time(), lag, lag, int(lag > slo)),
        )

    def stale(self, product: str, mode: str, since: float) -> None:
        self._write(
            "INSERT INTO product_freshness AS f (product, mode, stale_since) VALUES (?, ?, ?)"
            " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
            " stale_since = coalesce(f.stale_since, excluded.stale_since)",
            (product, mode, since),
        )

    def all(self) -> dict[str, Freshness]:
        rows = self._read(
            "SELECT product, mode, last_update, last_lag, max_lag, updates, breaches,"
            " stale_since FROM product_freshness"
        )
        return {str(r[0]): Freshness(*r) for r in rows}

    def confirm(self, product: str, mode: str, at: float) -> None:
        self._write(
            "INSERT INTO product_freshness AS f (product, mode, last_update) VALUES (?, ?, ?)"
            " ON CONFLICT (product) DO UPDATE SET last_update = excluded.last_update"
            " WHERE f.stale_since IS NULL",
            (product, mode, at),
        )

    def sample(self, rows: Sequence[tuple[str, float, float, bool]]) -> None:
        self._write_many(
            "INSERT INTO slo_samples (product, at, seconds, within) VALUES (?, ?, ?, ?)",
            [(p, at, seconds, bool(within)) for p, at, seconds, within in rows],
        )

    def compliance(self, since: float) -> dict[str, tuple[float, float]]:
        rows = self._read(
            "SELECT product, sum(CASE WHEN within THEN seconds ELSE 0 END), sum(seconds)"
            " FROM slo_samples WHERE at >= ? GROUP BY product",
            (since,),
        )
        return {str(p): (float(w or 0.0), float(t or 0.0)) for p, w, t in rows}

    def prune_samples(self, before: float) -> None:
        self._write("DELETE FROM slo_samples WHERE at < ?", (before,))


def letter_of(row: Sequence[object]) -> DeadLetter:
    (id_, source, reason, payload, key, at, via, topic, partition, offset, replayed) = row
    return DeadLetter(
        source=str(source),
        reason=str(reason),
        payload=bytes(payload) if isinstance(payload, bytes | memoryview) else None,
        via=str(via),
        key=bytes(key) if isinstance(key, bytes | memoryview) else None,
        topic=str(topic) if topic is not None else None,
        partition=int(partition) if isinstance(partition, int) else None,
        offset=int(offset) if isinstance(offset, int) else None,
        at=float(at) if isinstance(at, int | float) else 0.0,
        id=int(id_) if isinstance(id_, int) else 0,
        replayed_at=float(replayed) if isinstance(replayed, int | float) else None,
    )


def letter_params(d: DeadLetter, now: float) -> tuple[Any, ...]:
    """The insert parameters of a letter (its time defaulting to `now`)."""
    at = d.at or now
    return (d.source, d.reason, d.payload, d.key, at, d.via, d.topic, d.partition, d.offset)


class SqlDeadLetters(_SqlPart, DeadLetterStore):
    @property
    def _columns(self) -> str:
        return (
            "id, source, reason, payload, key, at, via, topic,"
            f" {self._d.partition_column}, {self._d.offset_column}, replayed_at"
        )

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Idempotent by log position: a letter already stored for the same topic,
        partition and offset is not added again (a redelivered batch)."""
        now = time.time()
        return self._write_many(
            "INSERT INTO dead_letters (source, reason, payload, key, at, via, topic,"
            f" {self._d.partition_column}, {self._d.offset_column})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [letter_params(d, now) for d in letters],
        )

    def list(
        self,
        source: str | None = None,
        limit: int = 50,
        include_replayed: bool = False,
        after_id: int = 0,
    ) -> list[DeadLetter]:
        rows = self._read(
            f"SELECT {self._columns} FROM dead_letters"
            " WHERE (CAST(? AS TEXT) IS NULL OR source = ?) AND id > ?"
            " AND (? OR replayed_at IS NULL) ORDER BY id LIMIT ?",
            (source, source, after_id, include_replayed, limit),
        )
        return [letter_of(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        rows = self._read(f"SELECT {self._columns} FROM dead_letters WHERE id = ?", (letter_id,))
        return letter_of(rows[0]) if rows else None

    def count(self, source: str | None = None, include_replayed: bool = False) -> int:
        rows = self._read(
            "SELECT count(*) FROM dead_letters WHERE (CAST(? AS TEXT) IS NULL OR source = ?)"
            " AND (? OR replayed_at IS NULL)",
            (source, source, include_replayed),
        )
        return int(rows[0][0]) if rows else 0

    def counts_by_source(self) -> dict[str, int]:
        rows = self._read(
            "SELECT source, count(*) FROM dead_letters WHERE replayed_at IS NULL"
            " GROUP BY source ORDER BY source"
        )
        return {str(s): int(n) for s, n in rows}

    def mark_replayed(self, ids: Sequence[int]) -> None:
        now = time.time()
        self._write_many(
            "UPDATE dead_letters SET replayed_at = ? WHERE id = ?", [(now, i) for i in ids]
        )

    def update_reason(self, letter_id: int, reason: str) -> None:
        self._write("UPDATE dead_letters SET reason = ? WHERE id = ?", (reason, letter_id))

    def delete(self, ids: Sequence[int]) -> int:
        """Under the store's erasure mode (SQLite: `secure_delete`, the write-ahead log
        truncated after)."""
        with self._s.erasing():
            return self._write_many("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])


class SqlObservations(_SqlPart, ObservationStore):
    def add_points(
        self,
        product: str,
        version: int | None,
        at: float,
        kind: str,
        status: str,
        metrics: Iterable[tuple[str, str, float | None]],
    ) -> None:
        self._write_many(
            "INSERT INTO obs_points (product, version, at, kind, status, metric, col, value)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(product, version, at, kind, status, m, c, v) for m, c, v in metrics],
        )

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
        sql = "SELECT at, value, version FROM obs_points WHERE product = ? AND metric = ?"
        sql += " AND col = ?"
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
        rows = self._read(sql + f" ORDER BY at, {self._d.insertion_order}", params)
        return [Point(float(a), float(v), ver) for a, v, ver in rows if v is not None]

    def series_names(self, product: str) -> list[tuple[str, str]]:
        rows = self._read(
            "SELECT DISTINCT metric, col FROM obs_points WHERE product = ? ORDER BY col, metric",
            [product],
        )
        return [(str(m), str(c)) for m, c in rows]

    def add_schema(self, snapshot: SchemaSnapshot, status: str) -> None:
        self._write(
            "INSERT INTO obs_schemas (product, version, at, status, fingerprint, columns)"
            " VALUES (?, ?, ?, ?, ?, ?)",
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
        rows = self._read(sql + " ORDER BY at DESC LIMIT 1", params)
        if not rows:
            return None
        row = rows[0]
        return SchemaSnapshot(str(row[0]), row[1], float(row[2]), str(row[3]), json.loads(row[4]))

    def add_quality(self, rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join(["?"] * len(QUALITY_COLUMNS))
        self._write_many(
            f"INSERT INTO obs_quality ({', '.join(QUALITY_COLUMNS)}) VALUES ({marks})",
            [tuple(row) for row in rows],
        )

    def quality(self, product: str, version: int | None = None) -> list[dict[str, Any]]:
        if version is None:
            found = self._read("SELECT max(version) FROM obs_quality WHERE product = ?", [product])
            version = found[0][0] if found else None
            if version is None:
                return []
        rows = self._read(
            f"SELECT {', '.join(QUALITY_COLUMNS)} FROM obs_quality"
            f" WHERE product = ? AND version = ? ORDER BY {self._d.insertion_order}",
            [product, version],
        )
        return [dict(zip(QUALITY_COLUMNS, r, strict=True)) for r in rows]

    def should_send(self, key: str, window: float, now: float | None = None) -> bool:
        """One decision per key across processes: the alert's row is created if missing,
        then read and updated inside one transaction that holds it."""
        now = time.time() if now is None else now
        sql = self._d.sql
        with self._s._tx() as db:
            db.execute(
                sql(
                    "INSERT INTO obs_alerts (key, last_sent, count) VALUES (?, ?, 0)"
                    " ON CONFLICT (key) DO NOTHING"
                ),
                (key, -1e18),
            )
            row = db.execute(
                sql(f"SELECT last_sent FROM obs_alerts WHERE key = ?{self._d.lock_row}"), (key,)
            ).fetchone()
            if now - float(row[0]) < window:
                db.execute(sql("UPDATE obs_alerts SET count = count + 1 WHERE key = ?"), (key,))
                return False
            db.execute(
                sql("UPDATE obs_alerts SET last_sent = ?, count = count + 1 WHERE key = ?"),
                (now, key),
            )
            return True


class SqlCdcPositions(_SqlPart, CdcPositionStore):
    def snapshot_done(self, slot: str) -> bool:
        rows = self._read("SELECT snapshot_at FROM cdc_slots WHERE slot = ?", (slot,))
        return bool(rows and rows[0][0] is not None)

    def mark_snapshot(self, slot: str) -> None:
        self._write(
            "INSERT INTO cdc_slots (slot, snapshot_at) VALUES (?, ?) ON CONFLICT (slot)"
            " DO UPDATE SET snapshot_at = excluded.snapshot_at",
            (slot, time.time()),
        )

    def forget(self, slot: str) -> None:
        sql = self._d.sql
        with self._s._tx() as db:
            db.execute(sql("DELETE FROM cdc_slots WHERE slot = ?"), (slot,))
            db.execute(sql("DELETE FROM cdc_slot_state WHERE slot = ?"), (slot,))

    def report(self, state: SlotState) -> None:
        self._write(
            "INSERT INTO cdc_slot_state (slot, source, confirmed_lsn, lag_bytes, lag_seconds,"
            " error, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slot) DO UPDATE SET"
            " source = excluded.source, confirmed_lsn = excluded.confirmed_lsn,"
            " lag_bytes = excluded.lag_bytes, lag_seconds = excluded.lag_seconds,"
            " error = excluded.error, at = excluded.at",
            (
                state.slot,
                state.source,
                state.confirmed_lsn,
                state.lag_bytes,
                state.lag_seconds,
                state.error,
                state.at,
            ),
        )

    def states(self) -> list[SlotState]:
        rows = self._read(
            "SELECT slot, source, confirmed_lsn, lag_bytes, lag_seconds, error, at"
            " FROM cdc_slot_state ORDER BY slot"
        )
        return [slot_state_of(r) for r in rows]


def slot_state_of(row: Sequence[Any]) -> SlotState:
    slot, source, lsn, lag_bytes, lag_seconds, error, at = row
    return SlotState(
        str(slot),
        str(source),
        None if lsn is None else str(lsn),
        None if lag_bytes is None else int(lag_bytes),
        None if lag_seconds is None else float(lag_seconds),
        None if error is None else str(error),
        float(at),
    )
