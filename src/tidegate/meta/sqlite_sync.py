"""Sync state of the SQLite metadata store: Arrow segments (`sync_segments`), row errors,
the in-flight batch, suppressions and targets.

A mixin of `SqliteMetadataStore` (it uses its `_tx`, `_query`, `_lock` and `_db`),
kept apart like `postgres_sync.py`, so each file reads as one job.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta.base import SubjectLocation, SyncedRow, SyncRowError

SEGMENTS_HARD_LIMIT = 256  # a checkpoint compacts a sync's state past this many segments


class SqliteSyncMixin:
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _query: Callable[..., list[tuple[Any, ...]]]
    _lock: threading.RLock
    _db: sqlite3.Connection

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
