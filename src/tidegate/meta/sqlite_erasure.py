"""Erasure support of the SQLite metadata store: tombstones, the pseudonymised consent
ledger, the sync-state tables of one subject, and audit body redaction.

A mixin of `SqliteMetadataStore` (it uses its `_tx` and `_query`), kept apart so the
erasure code reads in one place. The domain rules (what a tombstone hashes, which
ledger evidence is kept, which audit records are redacted and how the chain still
verifies) live in `requests/subject_requests.py`, `privacy/tombstones.py` and `audit/redact.py`;
this layer stores and deletes, atomically.

Deletes run with `PRAGMA secure_delete` on, so erased values are overwritten in the file
rather than left in free pages, and the write-ahead log is truncated afterwards so no
older page image keeps them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

#: tables holding one sync's rows by subject (created by the sync engine, may be absent)
SYNC_SUBJECT_TABLES = ("sync_rows", "sync_row_errors", "sync_inflight", "sync_suppressions")


class SqliteErasureMixin:
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _query: Callable[..., list[tuple[Any, ...]]]
    # ---------------------------------------------------------------- tombstones

    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool:
        """Record an erased subject by its keyed hash; False when it was already there."""
        with self._tx() as db:
            db.execute("UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'")
            cursor = db.execute(
                "INSERT OR IGNORE INTO erased_subjects (subject_hash, erased_at, request_id)"
                " VALUES (?, ?, ?)",
                (subject_hash, at, request_id),
            )
            return cursor.rowcount > 0

    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]:
        """(seq, subject hash, erased at) of tombstones after `after_seq`, in order."""
        rows = self._query(
            "SELECT seq, subject_hash, erased_at FROM erased_subjects WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        return [(int(s), str(h), float(a)) for s, h, a in rows]

    # ---------------------------------------------------------------- one subject's rows

    def erase_subject_rows(
        self,
        subject: str,
        pseudonym: str,
        digest: Callable[[str], str],
        values: Sequence[str] = (),
        *,
        syncs: Sequence[str] | None = None,
        consent: bool = True,
    ) -> dict[str, int]:
        """In one transaction: the subject's consent ledger entries keep their purpose,
        action and times under `pseudonym`, their evidence replaced by `digest(evidence)`;
        the subject's rows in the sync-state tables are deleted, and so are row errors
        whose message quotes one of `values` (the person's email, phone). Returns counts
        by table.

        `syncs`: only the state of these syncs (those sending the subject's type; None:
        all); `consent`: False leaves the ledger alone (it keys another subject type)."""
        counts: dict[str, int] = {}
        only = "" if syncs is None else f" AND sync IN ({','.join('?' * len(syncs))})"
        with self._secure(), self._tx() as db:
            ledger = (
                db.execute(
                    "SELECT seq, evidence FROM consent_ledger WHERE subject = ?", (subject,)
                ).fetchall()
                if consent
                else []
            )
            db.executemany(
                "UPDATE consent_ledger SET subject = ?, evidence = ? WHERE seq = ?",
                [(pseudonym, digest(str(evidence)), seq) for seq, evidence in ledger],
            )
            counts["consent_ledger"] = len(ledger)
            db.execute("UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'")
            present = {
                str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            for table in SYNC_SUBJECT_TABLES:
                if table in present and (syncs is None or syncs):
                    cursor = db.execute(
                        f"DELETE FROM {table} WHERE subject = ?{only}", (subject, *(syncs or ()))
                    )
                    counts[table] = int(cursor.rowcount)
            if "sync_row_errors" in present:
                for value in values:
                    cursor = db.execute(
                        "DELETE FROM sync_row_errors WHERE instr(message, ?) > 0", (value,)
                    )
                    counts["sync_row_errors"] = counts.get("sync_row_errors", 0) + int(
                        cursor.rowcount
                    )
        return counts

    def redact_audit(self, bodies: Mapping[int, str]) -> int:
        """Replace the bodies of these audit records (hashes and links stay as stored)."""
        if not bodies:
            return 0
        with self._secure(), self._tx() as db:
            db.executemany(
                "UPDATE audit_log SET body = ? WHERE seq = ?",
                [(body, seq) for seq, body in bodies.items()],
            )
        return len(bodies)

    def redact_runs(self, stats: Mapping[int, tuple[str, str]]) -> int:
        """Replace (stats JSON, error) of these runs."""
        if not stats:
            return 0
        with self._secure(), self._tx() as db:
            db.executemany(
                "UPDATE runs SET stats = ?, error = ? WHERE run_id = ?",
                [(s, e, run_id) for run_id, (s, e) in stats.items()],
            )
        return len(stats)

    def runs_text(self) -> Iterator[tuple[int, str, str]]:
        """(run id, stats JSON, error) of every run: what a redaction scan reads."""
        for run_id, stats, error in self._query("SELECT run_id, stats, error FROM runs"):
            yield int(run_id), str(stats), str(error)

    def redact_observations(self, columns: Sequence[tuple[str, str]], value: float) -> int:
        """Null the observed statistics (min, max, quantiles...) of these (product,
        column) pairs that equal `value`: a maximum that *is* an erased person's id."""
        present = {
            str(r[0]) for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        changed = 0
        with self._secure(), self._tx() as db:
            for table, column in (("obs_points", "value"), ("obs_quality", "observed")):
                if table not in present:
                    continue
                for product, col in columns:
                    cursor = db.execute(
                        f"UPDATE {table} SET {column} = NULL"
                        f" WHERE product = ? AND col = ? AND {column} = ?",
                        (product, col, value),
                    )
                    changed += int(cursor.rowcount)
        return changed

    def erasing(self) -> AbstractContextManager[None]:
        """A block in which deletes overwrite their data (other stores' methods too)."""
        return _SecureDelete(self)

    def _secure(self) -> _SecureDelete:
        return _SecureDelete(self)


class _SecureDelete:
    """`secure_delete` on for the block, then the WAL checkpointed and truncated.
    Blocks nest (an erasure around a dead-letter delete): the outermost one ends it."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __enter__(self) -> None:
        with self._store._lock:
            depth = self._store.__dict__.get("_secure_depth", 0)
            self._store._secure_depth = depth + 1
            if depth == 0:
                # restored after, not turned off: some builds (Debian's) have it on always
                row = self._store._db.execute("PRAGMA secure_delete").fetchone()
                self._store._secure_before = int(row[0]) if row else 0
                self._store._db.execute("PRAGMA secure_delete = ON")

    def __exit__(self, *exc: object) -> None:
        with self._store._lock:
            self._store._secure_depth -= 1
            if self._store._secure_depth:
                return
            before = int(self._store.__dict__.get("_secure_before", 0))
            self._store._db.execute(f"PRAGMA secure_delete = {before}")
            # a reader holding the WAL defers the truncation to the next checkpoint
            with contextlib.suppress(sqlite3.Error):
                self._store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
