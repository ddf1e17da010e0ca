"""Sync state of a SQL metadata store: Arrow segments (`sync_segments`), row errors, the
in-flight batch, suppressions and targets, written once for SQLite and PostgreSQL.

A mixin of both stores. It needs their `_tx` (a connection inside one transaction),
`_query` (one statement), `_reading` (a connection for several reads that belong
together) and `_dialect` (`sql_parts.SqlDialect`). Where the dialect has a `sync_lock`
(PostgreSQL: an advisory lock per sync), each transaction that appends segments of one
sync takes it first, so two processes checkpointing it never number two segments alike;
SQLite's write transactions are exclusive already.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta.base import SubjectLocation, SyncedRow, SyncRowError
from tidegate.meta.sql_parts import SqlStore

SEGMENTS_HARD_LIMIT = 256  # a checkpoint compacts a sync's state past this many segments

#: the tables that hold one sync's state, in the order `forget_sync` clears them
SYNC_TABLES = (
    "sync_state_segments",
    "sync_inflight_batches",
    "sync_row_errors",
    "sync_suppressions",
)


def state_table(rows: Sequence[SyncedRow] | Any, now: float) -> Any:
    """Synced rows (or an Arrow table of them) as a state segment's table."""
    from tidegate.meta import sync_segments as seg

    if hasattr(rows, "schema"):  # an Arrow table
        return seg.conform(rows, now)
    return seg.rows_table(list(rows), now)


class SqlSyncMixin(SqlStore):
    _reading: Callable[[], AbstractContextManager[Any]]

    # --- segments
    def _lock_sync(self, conn: Any, sync: str) -> None:
        if self._dialect.sync_lock:
            conn.execute(self._sql(self._dialect.sync_lock), (sync,))

    def _append_segment(self, conn: Any, sync: str, kind: str, table: Any, *, fresh: bool) -> None:
        from tidegate.meta.sync_segments import encode

        conn.execute(
            self._sql(
                "INSERT INTO sync_state_segments (sync, seq, kind, fresh, rows, body)"
                " SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?"
                " FROM sync_state_segments WHERE sync = ?"
            ),
            (sync, kind, bool(fresh), table.num_rows, encode(table), sync),
        )

    def _segments(self, conn: Any, sync: str) -> list[Any]:
        from tidegate.meta.sync_segments import Segment, decode

        rows = conn.execute(
            self._sql(
                "SELECT seq, kind, fresh, body FROM sync_state_segments WHERE sync = ? ORDER BY seq"
            ),
            (sync,),
        ).fetchall()
        return [
            Segment(seq, kind, bool(fresh), decode(bytes(body))) for seq, kind, fresh, body in rows
        ]

    def _segment_count(self, conn: Any, sync: str) -> int:
        (count,) = conn.execute(
            self._sql("SELECT count(*) FROM sync_state_segments WHERE sync = ?"), (sync,)
        ).fetchone()
        return int(count)

    def _compact(self, conn: Any, sync: str) -> None:
        from tidegate.meta.sync_segments import ROWS, fold

        state = fold(self._segments(conn, sync))
        conn.execute(self._sql("DELETE FROM sync_state_segments WHERE sync = ?"), (sync,))
        if state.num_rows:
            self._append_segment(conn, sync, ROWS, state.combine_chunks(), fresh=True)

    def synced_state(
        self,
        sync: str,
        keys: Sequence[str] | None = None,
        source_keys: Sequence[str] | None = None,
    ) -> Any:
        from tidegate.meta.sync_segments import fold

        with self._reading() as conn:
            segments = self._segments(conn, sync)
        return fold(segments, keys, source_keys)

    def compact_sync_state(self, sync: str, max_segments: int) -> bool:
        with self._tx() as conn:
            self._lock_sync(conn, sync)
            if self._segment_count(conn, sync) <= max_segments:
                return False
            self._compact(conn, sync)
            return True

    def forget_sync(self, sync: str) -> None:
        with self._tx() as conn:
            self._lock_sync(conn, sync)
            for table in SYNC_TABLES:
                conn.execute(self._sql(f"DELETE FROM {table} WHERE sync = ?"), (sync,))

    # --- sync runs
    def set_sync_target(self, sync: str, destination: str) -> None:
        with self._tx() as conn:
            conn.execute(
                self._sql(
                    "INSERT INTO sync_targets (sync, destination, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (sync) DO UPDATE SET destination = excluded.destination,"
                    " updated_at = excluded.updated_at"
                ),
                (sync, destination, time.time()),
            )

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
        state = state_table(upserted, now)  # encoded before the transaction starts
        gone = list(deleted) + [r.key for r in suppressed]
        with self._tx() as conn:
            self._lock_sync(conn, sync)
            if state.num_rows:
                self._append_segment(conn, sync, ROWS, state, fresh=fresh)
            if gone:
                tombstones = pa.table({"key": pa.array(gone, pa.string())})
                self._append_segment(conn, sync, GONE, tombstones, fresh=False)
            self._clear_errors(conn, sync, state, gone)
            self._many(
                conn,
                "INSERT INTO sync_row_errors (sync, key, subject, row_hash, message, first_at,"
                " last_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (sync, key) DO UPDATE SET subject = excluded.subject,"
                " row_hash = excluded.row_hash, message = excluded.message,"
                " last_at = excluded.last_at, attempts = sync_row_errors.attempts + 1,"
                " dismissed_at = CASE WHEN sync_row_errors.row_hash = excluded.row_hash"
                " THEN sync_row_errors.dismissed_at END",
                [(sync, e.key, e.subject, e.row_hash, e.message, now, now) for e in errors],
            )
            self._many(
                conn,
                "INSERT INTO sync_suppressions (sync, key, subject, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sync, key) DO UPDATE SET subject = excluded.subject,"
                " at = excluded.at",
                [(sync, r.key, r.subject, now) for r in suppressed],
            )
            if clear_inflight:
                conn.execute(self._sql("DELETE FROM sync_inflight_batches WHERE sync = ?"), (sync,))
            if self._segment_count(conn, sync) > SEGMENTS_HARD_LIMIT:
                self._compact(conn, sync)

    def _clear_errors(self, conn: Any, sync: str, state: Any, gone: list[str]) -> None:
        """Errors of keys that were written or deleted are gone (most syncs have none)."""
        open_errors = [
            r[0]
            for r in conn.execute(
                self._sql("SELECT key FROM sync_row_errors WHERE sync = ?"), (sync,)
            ).fetchall()
        ]
        if not open_errors:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        errored = pa.array(open_errors, pa.string())
        written = state.column("key")
        cleared = written.filter(pc.is_in(written, value_set=errored)).to_pylist()
        cleared += [k for k in gone if k in set(open_errors)]
        self._many(
            conn,
            "DELETE FROM sync_row_errors WHERE sync = ? AND key = ?",
            [(sync, k) for k in cleared],
        )

    def _put_inflight(self, conn: Any, sync: str, rows: Sequence[SyncedRow] | Any) -> None:
        from tidegate.meta.sync_segments import encode

        table = state_table(rows, time.time())
        conn.execute(
            self._sql(
                "INSERT INTO sync_inflight_batches (sync, rows, body) VALUES (?, ?, ?)"
                " ON CONFLICT (sync) DO UPDATE SET rows = excluded.rows, body = excluded.body"
            ),
            (sync, table.num_rows, encode(table)),
        )

    def set_sync_inflight(self, sync: str, rows: Sequence[SyncedRow] | Any) -> None:
        with self._tx() as conn:
            self._put_inflight(conn, sync, rows)

    def sync_inflight(self, sync: str) -> list[SyncedRow]:
        from tidegate.meta.sync_segments import decode, to_synced_rows

        rows = self._query(
            self._sql("SELECT body FROM sync_inflight_batches WHERE sync = ?"), (sync,)
        )
        return to_synced_rows(decode(bytes(rows[0][0]))) if rows else []

    def sync_row_errors(self, sync: str, include_dismissed: bool = False) -> list[SyncRowError]:
        rows = self._query(
            self._sql(
                "SELECT key, subject, row_hash, message, first_at, last_at, attempts,"
                " dismissed_at FROM sync_row_errors WHERE sync = ?"
                " AND (? OR dismissed_at IS NULL) ORDER BY last_at DESC, key"
            ),
            (sync, include_dismissed),
        )
        return [SyncRowError(*row) for row in rows]

    def dismiss_sync_errors(self, sync: str, keys: Sequence[str] | None, at: float) -> int:
        with self._tx() as conn:
            if keys is None:
                cursor = conn.execute(
                    self._sql(
                        "UPDATE sync_row_errors SET dismissed_at = ?"
                        " WHERE sync = ? AND dismissed_at IS NULL"
                    ),
                    (at, sync),
                )
                return int(cursor.rowcount)
            return self._many(
                conn,
                "UPDATE sync_row_errors SET dismissed_at = ?"
                " WHERE sync = ? AND key = ? AND dismissed_at IS NULL",
                [(at, sync, key) for key in keys],
                count=True,
            )

    def sync_suppressions(self, sync: str) -> list[SyncedRow]:
        rows = self._query(
            self._sql(
                "SELECT key, '', subject, NULL, at FROM sync_suppressions WHERE sync = ?"
                " ORDER BY key"
            ),
            (sync,),
        )
        return [SyncedRow(*row) for row in rows]

    def subject_locations(self, subject: str) -> list[SubjectLocation]:
        import pyarrow.compute as pc

        from tidegate.meta.sync_segments import ROWS, fold

        found: list[SubjectLocation] = []
        with self._reading() as conn:
            targets = dict(conn.execute("SELECT sync, destination FROM sync_targets").fetchall())
            syncs = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT sync FROM sync_state_segments ORDER BY sync"
                ).fetchall()
            ]
            by_sync = {sync: self._segments(conn, sync) for sync in syncs}
        for sync, segments in by_sync.items():
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
