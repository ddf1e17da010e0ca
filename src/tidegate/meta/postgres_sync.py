"""Sync state of the PostgreSQL metadata store: Arrow segments as bytea (`sync_segments`),
row errors, the in-flight batch, suppressions and targets.

A mixin of `PostgresMetadataStore` (it uses `_tx` and `_query`). Each transaction that
appends segments of one sync first takes an advisory lock of that sync, so two
processes checkpointing it never number two segments alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta.base import SubjectLocation, SyncedRow, SyncRowError

SEGMENTS_HARD_LIMIT = 256  # a checkpoint compacts a sync's state past this many segments


def _lock_sync(conn: Any, sync: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('tidegate.sync:' || %s))", (sync,))


def _append_segment(conn: Any, sync: str, kind: str, table: Any, *, fresh: bool) -> None:
    from tidegate.meta.sync_segments import encode

    conn.execute(
        "INSERT INTO sync_state_segments (sync, seq, kind, fresh, rows, body)"
        " SELECT %s, COALESCE(MAX(seq), 0) + 1, %s, %s, %s, %s"
        " FROM sync_state_segments WHERE sync = %s",
        (sync, kind, fresh, table.num_rows, encode(table), sync),
    )


def _segments(conn: Any, sync: str) -> list[Any]:
    from tidegate.meta.sync_segments import Segment, decode

    rows = conn.execute(
        "SELECT seq, kind, fresh, body FROM sync_state_segments WHERE sync = %s ORDER BY seq",
        (sync,),
    ).fetchall()
    return [Segment(seq, kind, bool(fresh), decode(bytes(body))) for seq, kind, fresh, body in rows]


def _state_table(rows: Sequence[SyncedRow] | Any, now: float) -> Any:
    from tidegate.meta import sync_segments as seg

    if hasattr(rows, "schema"):  # an Arrow table
        return seg.conform(rows, now)
    return seg.rows_table(list(rows), now)


def _compact(conn: Any, sync: str) -> None:
    from tidegate.meta.sync_segments import ROWS, fold

    state = fold(_segments(conn, sync))
    conn.execute("DELETE FROM sync_state_segments WHERE sync = %s", (sync,))
    if state.num_rows:
        _append_segment(conn, sync, ROWS, state.combine_chunks(), fresh=True)


class PostgresSyncMixin:
    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[tuple[Any, ...]]]
    _pool: Any

    def synced_state(
        self,
        sync: str,
        keys: Sequence[str] | None = None,
        source_keys: Sequence[str] | None = None,
    ) -> Any:
        from tidegate.meta.sync_segments import fold

        with self._pool.connection() as conn:
            segments = _segments(conn, sync)
        return fold(segments, keys, source_keys)

    def compact_sync_state(self, sync: str, max_segments: int) -> bool:
        with self._tx() as conn:
            _lock_sync(conn, sync)
            (count,) = conn.execute(
                "SELECT count(*) FROM sync_state_segments WHERE sync = %s", (sync,)
            ).fetchone()
            if count <= max_segments:
                return False
            _compact(conn, sync)
            return True

    def forget_sync(self, sync: str) -> None:
        with self._tx() as conn:
            _lock_sync(conn, sync)
            for table in (
                "sync_state_segments",
                "sync_inflight_batches",
                "sync_row_errors",
                "sync_suppressions",
            ):
                conn.execute(f"DELETE FROM {table} WHERE sync = %s", (sync,))

    def set_sync_target(self, sync: str, destination: str) -> None:
        self._query(
            "INSERT INTO sync_targets VALUES (%s, %s, %s) ON CONFLICT (sync) DO UPDATE"
            " SET destination = excluded.destination, updated_at = excluded.updated_at",
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
        state = _state_table(upserted, now)  # encoded before the transaction starts
        gone = list(deleted) + [r.key for r in suppressed]
        with self._tx() as conn:
            _lock_sync(conn, sync)
            if state.num_rows:
                _append_segment(conn, sync, ROWS, state, fresh=fresh)
            if gone:
                tombstones = pa.table({"key": pa.array(gone, pa.string())})
                _append_segment(conn, sync, GONE, tombstones, fresh=False)
            self._clear_errors(conn, sync, state, gone)
            with conn.cursor() as cur:
                if errors:
                    cur.executemany(
                        "INSERT INTO sync_row_errors (sync, key, subject, row_hash, message,"
                        " first_at, last_at, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, 1)"
                        " ON CONFLICT (sync, key) DO UPDATE SET subject = excluded.subject,"
                        " row_hash = excluded.row_hash, message = excluded.message,"
                        " last_at = excluded.last_at, attempts = sync_row_errors.attempts + 1,"
                        " dismissed_at = CASE WHEN sync_row_errors.row_hash = excluded.row_hash"
                        " THEN sync_row_errors.dismissed_at END",
                        [(sync, e.key, e.subject, e.row_hash, e.message, now, now) for e in errors],
                    )
                if suppressed:
                    cur.executemany(
                        "INSERT INTO sync_suppressions VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (sync, key) DO UPDATE SET subject = excluded.subject,"
                        " at = excluded.at",
                        [(sync, r.key, r.subject, now) for r in suppressed],
                    )
            if clear_inflight:
                conn.execute("DELETE FROM sync_inflight_batches WHERE sync = %s", (sync,))
            (count,) = conn.execute(
                "SELECT count(*) FROM sync_state_segments WHERE sync = %s", (sync,)
            ).fetchone()
            if count > SEGMENTS_HARD_LIMIT:
                _compact(conn, sync)

    @staticmethod
    def _clear_errors(conn: Any, sync: str, state: Any, gone: list[str]) -> None:
        """Errors of keys that were written or deleted are gone (most syncs have none)."""
        open_errors = [
            r[0] for r in conn.execute("SELECT key FROM sync_row_errors WHERE sync = %s", (sync,))
        ]
        if not open_errors:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        errored = pa.array(open_errors, pa.string())
        written = state.column("key")
        cleared = written.filter(pc.is_in(written, value_set=errored)).to_pylist()
        cleared += [k for k in gone if k in set(open_errors)]
        if cleared:
            conn.execute(
                "DELETE FROM sync_row_errors WHERE sync = %s AND key = ANY(%s)", (sync, cleared)
            )

    def set_sync_inflight(self, sync: str, rows: Sequence[SyncedRow] | Any) -> None:
        from tidegate.meta.sync_segments import encode

        table = _state_table(rows, time.time())
        self._query(
            "INSERT INTO sync_inflight_batches VALUES (%s, %s, %s) ON CONFLICT (sync)"
            " DO UPDATE SET rows = excluded.rows, body = excluded.body",
            (sync, table.num_rows, encode(table)),
        )

    def sync_inflight(self, sync: str) -> list[SyncedRow]:
        from tidegate.meta.sync_segments import decode, to_synced_rows

        rows = self._query("SELECT body FROM sync_inflight_batches WHERE sync = %s", (sync,))
        return to_synced_rows(decode(bytes(rows[0][0]))) if rows else []

    def sync_row_errors(self, sync: str, include_dismissed: bool = False) -> list[SyncRowError]:
        rows = self._query(
            "SELECT key, subject, row_hash, message, first_at, last_at, attempts, dismissed_at"
            " FROM sync_row_errors WHERE sync = %s AND (%s OR dismissed_at IS NULL)"
            " ORDER BY last_at DESC, key",
            (sync, include_dismissed),
        )
        return [SyncRowError(*row) for row in rows]

    def dismiss_sync_errors(self, sync: str, keys: Sequence[str] | None, at: float) -> int:
        with self._tx() as conn:
            if keys is None:
                cursor = conn.execute(
                    "UPDATE sync_row_errors SET dismissed_at = %s"
                    " WHERE sync = %s AND dismissed_at IS NULL",
                    (at, sync),
                )
            else:
                cursor = conn.execute(
                    "UPDATE sync_row_errors SET dismissed_at = %s"
                    " WHERE sync = %s AND key = ANY(%s) AND dismissed_at IS NULL",
                    (at, sync, list(keys)),
                )
            return int(cursor.rowcount)

    def sync_suppressions(self, sync: str) -> list[SyncedRow]:
        rows = self._query(
            "SELECT key, '', subject, NULL, at FROM sync_suppressions WHERE sync = %s ORDER BY key",
            (sync,),
        )
        return [SyncedRow(*row) for row in rows]

    def subject_locations(self, subject: str) -> list[SubjectLocation]:
        import pyarrow.compute as pc

        from tidegate.meta.sync_segments import ROWS, fold

        found: list[SubjectLocation] = []
        with self._pool.connection() as conn:
            targets = dict(conn.execute("SELECT sync, destination FROM sync_targets").fetchall())
            syncs = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT sync FROM sync_state_segments ORDER BY sync"
                ).fetchall()
            ]
            by_sync = {sync: _segments(conn, sync) for sync in syncs}
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
