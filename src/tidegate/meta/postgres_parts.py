"""The parts of the PostgreSQL metadata store (`parts.py`) and its erasure support.

They borrow the store's pooled connections (`_tx`, `_query`). Where two processes
could race (alert deduplication, dead letters of one log position), one statement or
one locked row decides.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from tidegate.meta.sqlite_parts import letter_of, letter_params, slot_state_of

_BUMP = "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'"


class _Owner(Protocol):
    def _tx(self) -> AbstractContextManager[Any]: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class PostgresFreshness(FreshnessStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def updated(self, product: str, mode: str, lag: float, slo: float) -> None:
        self._s._query(
            "INSERT INTO product_freshness AS f (product, mode, last_update, last_lag, max_lag,"
            " updates, breaches, stale_since) VALUES (%s, %s, %s, %s, %s, 1, %s, NULL)"
            " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
            " last_update = excluded.last_update, last_lag = excluded.last_lag,"
            " max_lag = greatest(f.max_lag, excluded.last_lag), updates = f.updates + 1,"
            " breaches = f.breaches + excluded.breaches, stale_since = NULL",
            (product, mode, time.time(), lag, lag, int(lag > slo)),
        )

    def stale(self, product: str, mode: str, since: float) -> None:
        self._s._query(
            "INSERT INTO product_freshness AS f (product, mode, stale_since) VALUES (%s, %s, %s)"
            " ON CONFLICT (product) DO UPDATE SET mode = excluded.mode,"
            " stale_since = coalesce(f.stale_since, excluded.stale_since)",
            (product, mode, since),
        )

    def all(self) -> dict[str, Freshness]:
        rows = self._s._query(
            "SELECT product, mode, last_update, last_lag, max_lag, updates, breaches,"
            " stale_since FROM product_freshness"
        )
        return {str(r[0]): Freshness(*r) for r in rows}

    def confirm(self, product: str, mode: str, at: float) -> None:
        self._s._query(
            "INSERT INTO product_freshness AS f (product, mode, last_update) VALUES (%s, %s, %s)"
            " ON CONFLICT (product) DO UPDATE SET last_update = excluded.last_update"
            " WHERE f.stale_since IS NULL",
            (product, mode, at),
        )

    def sample(self, rows: Sequence[tuple[str, float, float, bool]]) -> None:
        if not rows:
            return
        with self._s._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO slo_samples (product, at, seconds, within) VALUES (%s, %s, %s, %s)",
                [(p, at, seconds, bool(within)) for p, at, seconds, within in rows],
            )

    def compliance(self, since: float) -> dict[str, tuple[float, float]]:
        rows = self._s._query(
            "SELECT product, sum(CASE WHEN within THEN seconds ELSE 0 END), sum(seconds)"
            " FROM slo_samples WHERE at >= %s GROUP BY product",
            (since,),
        )
        return {str(p): (float(w or 0.0), float(t or 0.0)) for p, w, t in rows}

    def prune_samples(self, before: float) -> None:
        self._s._query("DELETE FROM slo_samples WHERE at < %s", (before,))


_LETTER = (
    "SELECT id, source, reason, payload, key, at, via, topic, log_partition, log_offset,"
    " replayed_at FROM dead_letters"
)


class PostgresDeadLetters(DeadLetterStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def add(self, letters: Sequence[DeadLetter]) -> int:
        if not letters:
            return 0
        now = time.time()
        added = 0
        with self._s._tx() as conn, conn.cursor() as cur:
            for d in letters:
                cur.execute(
                    "INSERT INTO dead_letters (source, reason, payload, key, at, via, topic,"
                    " log_partition, log_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    letter_params(d, now),
                )
                added += cur.rowcount
        return added

    def list(
        self,
        source: str | None = None,
        limit: int = 50,
        include_replayed: bool = False,
        after_id: int = 0,
    ) -> list[DeadLetter]:
        rows = self._s._query(
            f"{_LETTER} WHERE (%s::text IS NULL OR source = %s) AND id > %s"
            " AND (%s OR replayed_at IS NULL) ORDER BY id LIMIT %s",
            (source, source, after_id, include_replayed, limit),
        )
        return [letter_of(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        rows = self._s._query(f"{_LETTER} WHERE id = %s", (letter_id,))
        return letter_of(rows[0]) if rows else None

    def count(self, source: str | None = None, include_replayed: bool = False) -> int:
        rows = self._s._query(
            "SELECT count(*) FROM dead_letters WHERE (%s::text IS NULL OR source = %s)"
            " AND (%s OR replayed_at IS NULL)",
            (source, source, include_replayed),
        )
        return int(rows[0][0])

    def counts_by_source(self) -> dict[str, int]:
        rows = self._s._query(
            "SELECT source, count(*) FROM dead_letters WHERE replayed_at IS NULL"
            " GROUP BY source ORDER BY source"
        )
        return {str(s): int(n) for s, n in rows}

    def mark_replayed(self, ids: Sequence[int]) -> None:
        if ids:
            self._s._query(
                "UPDATE dead_letters SET replayed_at = %s WHERE id = ANY(%s)",
                (time.time(), list(ids)),
            )

    def update_reason(self, letter_id: int, reason: str) -> None:
        self._s._query("UPDATE dead_letters SET reason = %s WHERE id = %s", (reason, letter_id))

    def delete(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        with self._s._tx() as conn:
            cursor = conn.execute("DELETE FROM dead_letters WHERE id = ANY(%s)", (list(ids),))
            return int(cursor.rowcount)


class PostgresObservations(ObservationStore):
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
        if not rows:
            return
        with self._s._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO obs_points (product, version, at, kind, status, metric, col, value)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
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
        sql = "SELECT at, value, version FROM obs_points WHERE product = %s AND metric = %s"
        sql += " AND col = %s"
        params: list[Any] = [product, metric, col]
        for clause, value in (
            ("at >= %s", since),
            ("at < %s", until),
            ("kind = %s", kind),
            ("status = %s", status),
        ):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        rows = self._s._query(sql + " ORDER BY at, id", params)
        return [Point(float(a), float(v), ver) for a, v, ver in rows if v is not None]

    def series_names(self, product: str) -> list[tuple[str, str]]:
        rows = self._s._query(
            "SELECT DISTINCT metric, col FROM obs_points WHERE product = %s ORDER BY col, metric",
            [product],
        )
        return [(str(m), str(c)) for m, c in rows]

    def add_schema(self, snapshot: SchemaSnapshot, status: str) -> None:
        self._s._query(
            "INSERT INTO obs_schemas VALUES (%s, %s, %s, %s, %s, %s)",
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
        sql += " WHERE product = %s AND status = 'live'"
        params: list[Any] = [product]
        if before is not None:
            sql += " AND at < %s"
            params.append(before)
        rows = self._s._query(sql + " ORDER BY at DESC LIMIT 1", params)
        if not rows:
            return None
        row = rows[0]
        return SchemaSnapshot(str(row[0]), row[1], float(row[2]), str(row[3]), json.loads(row[4]))

    def add_quality(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        marks = ", ".join(["%s"] * len(QUALITY_COLUMNS))
        with self._s._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO obs_quality ({', '.join(QUALITY_COLUMNS)}) VALUES ({marks})",
                [tuple(row) for row in rows],
            )

    def quality(self, product: str, version: int | None = None) -> list[dict[str, Any]]:
        if version is None:
            found = self._s._query(
                "SELECT max(version) FROM obs_quality WHERE product = %s", [product]
            )
            version = found[0][0] if found else None
            if version is None:
                return []
        rows = self._s._query(
            f"SELECT {', '.join(QUALITY_COLUMNS)} FROM obs_quality"
            " WHERE product = %s AND version = %s ORDER BY id",
            [product, version],
        )
        return [dict(zip(QUALITY_COLUMNS, r, strict=True)) for r in rows]

    def should_send(self, key: str, window: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._s._tx() as conn:
            conn.execute(
                "INSERT INTO obs_alerts (key, last_sent, count) VALUES (%s, %s, 0)"
                " ON CONFLICT (key) DO NOTHING",
                (key, -1e18),
            )
            row = conn.execute(
                "SELECT last_sent FROM obs_alerts WHERE key = %s FOR UPDATE", (key,)
            ).fetchone()
            if now - float(row[0]) < window:
                conn.execute("UPDATE obs_alerts SET count = count + 1 WHERE key = %s", (key,))
                return False
            conn.execute(
                "UPDATE obs_alerts SET last_sent = %s, count = count + 1 WHERE key = %s",
                (now, key),
            )
            return True


class PostgresCdcPositions(CdcPositionStore):
    def __init__(self, owner: _Owner) -> None:
        self._s = owner

    def snapshot_done(self, slot: str) -> bool:
        rows = self._s._query("SELECT snapshot_at FROM cdc_slots WHERE slot = %s", (slot,))
        return bool(rows and rows[0][0] is not None)

    def mark_snapshot(self, slot: str) -> None:
        self._s._query(
            "INSERT INTO cdc_slots VALUES (%s, %s) ON CONFLICT (slot)"
            " DO UPDATE SET snapshot_at = excluded.snapshot_at",
            (slot, time.time()),
        )

    def forget(self, slot: str) -> None:
        self._s._query("DELETE FROM cdc_slots WHERE slot = %s", (slot,))
        self._s._query("DELETE FROM cdc_slot_state WHERE slot = %s", (slot,))

    def report(self, state: SlotState) -> None:
        self._s._query(
            "INSERT INTO cdc_slot_state (slot, source, confirmed_lsn, lag_bytes, lag_seconds,"
            " error, at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (slot) DO UPDATE SET"
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
        rows = self._s._query(
            "SELECT slot, source, confirmed_lsn, lag_bytes, lag_seconds, error, at"
            " FROM cdc_slot_state ORDER BY slot"
        )
        return [slot_state_of(r) for r in rows]


class PostgresErasureMixin:
    """Erasure on PostgreSQL. Deleted or updated values stay in dead tuples until VACUUM
    reclaims them (capabilities.secure_delete is False): operators who need them gone
    at once run VACUUM on the metadata schema after an erasure."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[tuple[Any, ...]]]

    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool:
        with self._tx() as conn:
            conn.execute(_BUMP)
            cursor = conn.execute(
                "INSERT INTO erased_subjects (subject_hash, erased_at, request_id)"
                " VALUES (%s, %s, %s) ON CONFLICT (subject_hash) DO NOTHING",
                (subject_hash, at, request_id),
            )
            return bool(cursor.rowcount > 0)

    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]:
        rows = self._query(
            "SELECT seq, subject_hash, erased_at FROM erased_subjects WHERE seq > %s ORDER BY seq",
            (after_seq,),
        )
        return [(int(s), str(h), float(a)) for s, h, a in rows]

    def erase_subject_rows(
        self,
        subject: str,
        pseudonym: str,
        digest: Callable[[str], str],
        values: Sequence[str] = (),
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._tx() as conn:
            conn.execute(_BUMP)
            ledger = conn.execute(
                "SELECT seq, evidence FROM consent_ledger WHERE subject = %s", (subject,)
            ).fetchall()
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE consent_ledger SET subject = %s, evidence = %s WHERE seq = %s",
                    [(pseudonym, digest(str(evidence)), seq) for seq, evidence in ledger],
                )
            counts["consent_ledger"] = len(ledger)
            for table in ("sync_row_errors", "sync_suppressions"):
                cursor = conn.execute(f"DELETE FROM {table} WHERE subject = %s", (subject,))
                counts[table] = int(cursor.rowcount)
            for value in values:  # a refused row's message quoting the person's email
                cursor = conn.execute(
                    "DELETE FROM sync_row_errors WHERE strpos(message, %s) > 0", (value,)
                )
                counts["sync_row_errors"] += int(cursor.rowcount)
        return counts

    def redact_audit(self, bodies: Mapping[int, str]) -> int:
        if not bodies:
            return 0
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE audit_log SET body = %s WHERE seq = %s",
                [(body.encode("utf-8", "surrogateescape"), seq) for seq, body in bodies.items()],
            )
        return len(bodies)

    def redact_runs(self, stats: Mapping[int, tuple[str, str]]) -> int:
        if not stats:
            return 0
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE runs SET stats = %s, error = %s WHERE run_id = %s",
                [(s, e, run_id) for run_id, (s, e) in stats.items()],
            )
        return len(stats)

    def runs_text(self) -> Iterator[tuple[int, str, str]]:
        for run_id, stats, error in self._query("SELECT run_id, stats, error FROM runs"):
            yield int(run_id), str(stats), str(error)

    def redact_observations(self, columns: Sequence[tuple[str, str]], value: float) -> int:
        changed = 0
        with self._tx() as conn:
            for table, column in (("obs_points", "value"), ("obs_quality", "observed")):
                for product, col in columns:
                    cursor = conn.execute(
                        f"UPDATE {table} SET {column} = NULL"
                        f" WHERE product = %s AND col = %s AND {column} = %s",
                        (product, col, value),
                    )
                    changed += int(cursor.rowcount)
        return changed

    def erasing(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()
