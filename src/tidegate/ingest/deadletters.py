"""The dead-letter store: every event tidegate could not take, with the reason why.

It lives in its own table of the metadata SQLite file. An event read from the log is
dead-lettered under its (topic, partition, offset), so a worker that dies after
writing dead letters and before committing its offsets does not write them twice.
`replay` checks stored events again (after the contract or the producer was fixed)
and appends those that now pass to the source's topic.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  source TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB, key BLOB,
  at REAL NOT NULL, via TEXT NOT NULL,
  topic TEXT, partition INTEGER, offset INTEGER,
  replayed_at REAL,
  UNIQUE (topic, partition, offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_source ON dead_letters (source, id);
"""


@dataclass(frozen=True)
class DeadLetter:
    source: str
    reason: str
    payload: bytes | None
    via: str  # http, log, file, cdc, replay
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    at: float = 0.0
    id: int = 0
    replayed_at: float | None = None


class DeadLetterStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store letters; one already stored for the same log position is kept, not doubled."""
        if not letters:
            return 0
        now = time.time()
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO dead_letters (source, reason, payload, key, at, via,"
                " topic, partition, offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.source,
                        d.reason,
                        d.payload,
                        d.key,
                        d.at or now,
                        d.via,
                        d.topic,
                        d.partition,
                        d.offset,
                    )
                    for d in letters
                ],
            )
            return db.total_changes - before

    def list(
        self,
        source: str | None = None,
        limit: int = 50,
        include_replayed: bool = False,
        after_id: int = 0,
    ) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, reason, payload, key, at, via, topic, partition, offset,"
                " replayed_at FROM dead_letters WHERE (? IS NULL OR source = ?) AND id > ?"
                " AND (? OR replayed_at IS NULL) ORDER BY id LIMIT ?",
                (source, source, after_id, include_replayed, limit),
            ).fetchall()
        return [_letter(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, source, reason, payload, key, at, via, topic, partition, offset,"
                " replayed_at FROM dead_letters WHERE id = ?",
                (letter_id,),
            ).fetchone()
        return _letter(row) if row else None

    def count(self, source: str | None = None, include_replayed: bool = False) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM dead_letters WHERE (? IS NULL OR source = ?)"
                " AND (? OR replayed_at IS NULL)",
                (source, source, include_replayed),
            ).fetchone()
        return int(row[0]) if row else 0

    def counts_by_source(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, count(*) FROM dead_letters WHERE replayed_at IS NULL"
                " GROUP BY source ORDER BY source"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def mark_replayed(self, ids: Sequence[int]) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE dead_letters SET replayed_at = ? WHERE id = ?", [(now, i) for i in ids]
            )

    def update_reason(self, letter_id: int, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE dead_letters SET reason = ? WHERE id = ?", (reason, letter_id))

    def delete(self, ids: Sequence[int]) -> int:
        """Remove letters for good (erasure requests, requests/subject_requests.py): overwritten in
        the file (`secure_delete`), and the write-ahead log truncated afterwards."""
        if not ids:
            return 0
        with self._lock:
            self._db.execute("PRAGMA secure_delete = ON")
        try:
            with self._tx() as db:
                before = db.total_changes
                db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
                removed = db.total_changes - before
        finally:
            with self._lock:
                self._db.execute("PRAGMA secure_delete = OFF")
                # a reader holding the log defers the truncation to a later checkpoint
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _letter(row: tuple[object, ...]) -> DeadLetter:
    (id_, source, reason, payload, key, at, via, topic, partition, offset, replayed) = row
    return DeadLetter(
        source=str(source),
        reason=str(reason),
        payload=payload if isinstance(payload, bytes) else None,
        via=str(via),
        key=key if isinstance(key, bytes) else None,
        topic=str(topic) if topic is not None else None,
        partition=int(partition) if isinstance(partition, int) else None,
        offset=int(offset) if isinstance(offset, int) else None,
        at=float(at) if isinstance(at, int | float) else 0.0,
        id=int(id_) if isinstance(id_, int) else 0,
        replayed_at=float(replayed) if isinstance(replayed, int | float) else None,
    )
