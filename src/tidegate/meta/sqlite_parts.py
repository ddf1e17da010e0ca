"""The parts of the SQLite metadata store (`parts.py`): freshness, dead letters,
observations, CDC positions. They share the store's one connection, lock and
transactions; their tables come from the store's migrations."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
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


class _Owner(Protocol):
    def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def erasing(self) -> AbstractContextManager[None]: ...


class SqliteFreshness(FreshnessStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def updated(self, product: str, mode: str, lag: float, slo: float) -> None:
        with self._s._tx() as db:
            db.execute(
                "INSERT INTO product_freshness (product, mode, last_update, last_lag, max_lag,"
                " updates, breaches, stale_since) VALUES (?, ?, ?, ?, ?, 1, ?, NULL)"
                " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
                " last_update = excluded.last_update, last_lag = excluded.last_lag,"
                " max_lag = max(max_lag, excluded.last_lag), updates = updates + 1,"
                " breaches = breaches + excluded.breaches, stale_since = NULL",
                (product, mode, time.time(), lag, lag, int(lag > slo)),
            )

    def stale(self, product: str, mode: str, since: float) -> None:
        with self._s._tx() as db:
            db.execute(
                "INSERT INTO product_freshness (product, mode, stale_since) VALUES (?, ?, ?)"
                " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
                " stale_since = coalesce(stale_since, excluded.stale_since)",
                (product, mode, since),
            )

    def all(self) -> dict[str, Freshness]:
        rows = self._s._query(
            "SELECT product, mode, last_update, last_lag, max_lag, updates, breaches,"
            " stale_since FROM product_freshness"
        )
        return {str(r[0]): Freshness(*r) for r in rows}

    def confirm(self, product: str, mode: str, at: float) -> None:
        with self._s._tx() as db:
            db.execute(
                "INSERT INTO product_freshness (product, mode, last_update) VALUES (?, ?, ?)"
                " ON CONFLICT (product) DO UPDATE SET last_update = excluded.last_update"
                " WHERE product_freshness.stale_since IS NULL",
                (product, mode, at),
            )

    def sample(self, rows: Sequence[tuple[str, float, float, bool]]) -> None:
        with self._s._tx() as db:
            db.executemany(
                "INSERT INTO slo_samples (product, at, seconds, within) VALUES (?, ?, ?, ?)",
                [(p, at, seconds, int(within)) for p, at, seconds, within in rows],
            )

    def compliance(self, since: float) -> dict[str, tuple[float, float]]:
        rows = self._s._query(
            "SELECT product, sum(CASE WHEN within THEN seconds ELSE 0 END), sum(seconds)"
            " FROM slo_samples WHERE at >= ? GROUP BY product",
            (since,),
        )
        return {str(p): (float(w or 0.0), float(t or 0.0)) for p, w, t in rows}

    def prune_samples(self, before: float) -> None:
        with self._s._tx() as db:
            db.execute("DELETE FROM slo_samples WHERE at < ?", (before,))


_LETTER = (
    "SELECT id, source, reason, payload, key, at, via, topic, partition, offset, replayed_at"
    " FROM dead_letters"
)


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


class SqliteDeadLetters(DeadLetterStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def add(self, letters: Sequence[DeadLetter]) -> int:
        if not letters:
            return 0
        now = time.time()
        with self._s._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO dead_letters (source, reason, payload, key, at, via,"
                " topic, partition, offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [letter_params(d, now) for d in letters],
            )
            return db.total_changes - before

    def list(
        self,
        source: str | None = None,
        limit: int = 50,
        include_replayed: bool = False,
        after_id: int = 0,
    ) -> list[DeadLetter]:
        rows = self._s._query(
            f"{_LETTER} WHERE (? IS NULL OR source = ?) AND id > ?"
            " AND (? OR replayed_at IS NULL) ORDER BY id LIMIT ?",
            (source, source, after_id, include_replayed, limit),
        )
        return [letter_of(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        rows = self._s._query(f"{_LETTER} WHERE id = ?", (letter_id,))
        return letter_of(rows[0]) if rows else None

    def count(self, source: str | None = None, include_replayed: bool = False) -> int:
        rows = self._s._query(
            "SELECT count(*) FROM dead_letters WHERE (? IS NULL OR source = ?)"
            " AND (? OR replayed_at IS NULL)",
            (source, source, include_replayed),
        )
        return int(rows[0][0]) if rows else 0

    def counts_by_source(self) -> dict[str, int]:
        rows = self._s._query(
            "SELECT source, count(*) FROM dead_letters WHERE replayed_at IS NULL"
            " GROUP BY source ORDER BY source"
        )
        return {str(s): int(n) for s, n in rows}

    def mark_replayed(self, ids: Sequence[int]) -> None:
        now = time.time()
        with self._s._tx() as db:
            db.executemany(
                "UPDATE dead_letters SET replayed_at = ? WHERE id = ?", [(now, i) for i in ids]
            )

    def update_reason(self, letter_id: int, reason: str) -> None:
        with self._s._tx() as db:
            db.execute("UPDATE dead_letters SET reason = ? WHERE id = ?", (reason, letter_id))

    def delete(self, ids: Sequence[int]) -> int:
        """Overwritten in the file (`secure_delete`), the write-ahead log truncated after."""
        if not ids:
            return 0
        with self._s.erasing(), self._s._tx() as db:
            before = db.total_changes
            db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
            return db.total_changes - before


class SqliteObservations(ObservationStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def add_points(
        self,
        product: str,
        version: int | None,
        at: float,
        kind: str,
        status: str,
        metrics: Iterable[tuple[str, str, float | None]],
    ) -> None:
        rows = [(product, version, at, kind, status, m, c, v) for m, c, v in metrics]
        with self._s._tx() as db:
            db.executemany("INSERT INTO obs_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

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
        rows = self._s._query(sql + " ORDER BY at", params)
        return [Point(float(a), float(v), ver) for a, v, ver in rows if v is not None]

    def series_names(self, product: str) -> list[tuple[str, str]]:
        rows = self._s._query(
            "SELECT DISTINCT metric, col FROM obs_points WHERE product = ? ORDER BY col, metric",
            [product],
        )
        return [(str(m), str(c)) for m, c in rows]

    def add_schema(self, snapshot: SchemaSnapshot, status: str) -> None:
        with self._s._tx() as db:
            db.execute(
                "INSERT INTO obs_schemas VALUES (?, ?, ?, ?, ?, ?)",
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
        rows = self._s._query(sql + " ORDER BY at DESC LIMIT 1", params)
        if not rows:
            return None
        row = rows[0]
        return SchemaSnapshot(str(row[0]), row[1], float(row[2]), str(row[3]), json.loads(row[4]))

    def add_quality(self, rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(QUALITY_COLUMNS))
        with self._s._tx() as db:
            db.executemany(f"INSERT INTO obs_quality VALUES ({marks})", rows)

    def quality(self, product: str, version: int | None = None) -> list[dict[str, Any]]:
        if version is None:
            found = self._s._query(
                "SELECT max(version) FROM obs_quality WHERE product = ?", [product]
            )
            version = found[0][0] if found else None
            if version is None:
                return []
        rows = self._s._query(
            f"SELECT {', '.join(QUALITY_COLUMNS)} FROM obs_quality"
            " WHERE product = ? AND version = ? ORDER BY rowid",
            [product, version],
        )
        return [dict(zip(QUALITY_COLUMNS, r, strict=True)) for r in rows]

    def should_send(self, key: str, window: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._s._tx() as db:
            row = db.execute("SELECT last_sent FROM obs_alerts WHERE key = ?", [key]).fetchone()
            if row is not None and now - float(row[0]) < window:
                db.execute("UPDATE obs_alerts SET count = count + 1 WHERE key = ?", [key])
                return False
            db.execute(
                "INSERT INTO obs_alerts (key, last_sent) VALUES (?, ?) ON CONFLICT (key)"
                " DO UPDATE SET last_sent = excluded.last_sent, count = count + 1",
                [key, now],
            )
            return True


class SqliteCdcPositions(CdcPositionStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def snapshot_done(self, slot: str) -> bool:
        rows = self._s._query("SELECT snapshot_at FROM cdc_slots WHERE slot = ?", (slot,))
        return bool(rows and rows[0][0] is not None)

    def mark_snapshot(self, slot: str) -> None:
        with self._s._tx() as db:
            db.execute("INSERT OR REPLACE INTO cdc_slots VALUES (?, ?)", (slot, time.time()))

    def forget(self, slot: str) -> None:
        with self._s._tx() as db:
            db.execute("DELETE FROM cdc_slots WHERE slot = ?", (slot,))
            db.execute("DELETE FROM cdc_slot_state WHERE slot = ?", (slot,))

    def report(self, state: SlotState) -> None:
        with self._s._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO cdc_slot_state (slot, source, confirmed_lsn, lag_bytes,"
                " lag_seconds, error, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                _slot_row(state),
            )

    def states(self) -> list[SlotState]:
        rows = self._s._query(
            "SELECT slot, source, confirmed_lsn, lag_bytes, lag_seconds, error, at"
            " FROM cdc_slot_state ORDER BY slot"
        )
        return [slot_state_of(r) for r in rows]


def _slot_row(state: SlotState) -> tuple[Any, ...]:
    return (
        state.slot,
        state.source,
        state.confirmed_lsn,
        state.lag_bytes,
        state.lag_seconds,
        state.error,
        state.at,
    )


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
