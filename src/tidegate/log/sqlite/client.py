"""The embedded event log: one SQLite file in WAL mode, no server.

Topics have a fixed number of partitions; a keyed record goes to `crc32(key) % n`, an
unkeyed one round-robin. Appends are one transaction, so a batch is in the log
entirely or not at all. Group membership, partition ownership and committed offsets
live in the same file, so consumers in different processes cooperate through it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tidegate.errors import LogError
from tidegate.log.base import (
    Consumer,
    EventLog,
    LogCapabilities,
    Message,
    Record,
    TopicPartition,
    TopicSpec,
)
from tidegate.log.sqlite.schema import (
    connect,
    decode_headers,
    encode_headers,
    partition_of,
    writer_lock,
)
from tidegate.sqlite_db import immediate

DEFAULT_PARTITIONS = 4


class SqliteEventLog(EventLog):
    kind = "sqlite"
    capabilities = LogCapabilities(
        client_side_retention=True, multi_process_groups=True, erases_records=True
    )

    def __init__(
        self,
        path: Path | str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        retention_seconds: float | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.default_partitions = partitions
        self.default_retention = (retention_seconds, retention_bytes)
        self._lock = threading.RLock()
        self._writer = writer_lock(self.path)
        self._round_robin = itertools.count()
        #: partitions per topic (fixed for a topic's life; checked at each append)
        self._counts: dict[str, int] = {}
        try:
            self._db = connect(self.path)
        except sqlite3.Error as err:
            raise LogError(f"cannot open the event log {self.path}: {err}") from None

    @classmethod
    def from_config(cls, config: Any, root: Any) -> SqliteEventLog:
        from tidegate.project.models import parse_duration

        path = Path(config.path)
        retention = config.retention
        return cls(
            path if path.is_absolute() else Path(root) / path,
            partitions=config.partitions,
            retention_seconds=parse_duration(retention).total_seconds() if retention else None,
            retention_bytes=config.retention_bytes,
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # the process's writers queue here (`writer_lock`)
        with self._lock, self._writer, immediate(self._db) as db:
            yield db

    # ---------------------------------------------------------------- topics

    def create_topic(self, spec: TopicSpec) -> None:
        with self._tx() as db:
            _ensure_topic(db, spec)

    def _default_spec(self, topic: str) -> TopicSpec:
        seconds, size = self.default_retention
        return TopicSpec(topic, self.default_partitions, seconds, size)

    def partitions(self, topic: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT partitions FROM topics WHERE name = ?", (topic,)
            ).fetchone()
        if row is None:
            raise LogError(f"no topic {topic!r} in the event log")
        return int(row[0])

    def delete_topic(self, topic: str) -> None:
        with self._tx() as db:
            for table in ("records", "partitions", "owners", "offsets"):
                db.execute(f"DELETE FROM {table} WHERE topic = ?", (topic,))
            db.execute("DELETE FROM topics WHERE name = ?", (topic,))
        self._counts.pop(topic, None)

    # ---------------------------------------------------------------- produce

    def append(self, topic: str, messages: Sequence[Message]) -> list[TopicPartition]:
        """Append `messages` in one transaction; their partitions, in order.

        In `tidegate run` the HTTP door appends while the worker keeps the GIL busy,
        and every SQLite call lets go of the GIL and then waits for it
        again (up to the interpreter's switch interval, 5 ms) while this process's
        writer lock is held. So the transaction makes five calls whatever the batch
        (BEGIN, the partitions' heads, the records, the new heads, COMMIT), and the rows
        are built before it: only each row's offset (the partition's head plus the row's
        rank in its partition) is filled in inside."""
        if not messages:
            return []
        count = self._counts.get(topic)
        if count is None:
            with self._tx() as db:
                count = self._counts[topic] = _ensure_topic(db, self._default_spec(topic))
        while True:
            partitions, params, ranks = self._rows(topic, messages, count)
            with self._tx() as db:
                heads: dict[int, int] = dict(
                    db.execute(
                        "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
                    ).fetchall()
                )
                if len(heads) == count:
                    for slot, partition in enumerate(partitions):
                        params[slot * _FIELDS + _OFFSET] += heads[partition]
                    _insert(db, params, len(partitions))
                    _advance(db, topic, {p: heads[p] + n for p, n in ranks.items()})
                    return [(topic, p) for p in partitions]
                # deleted and created again, with another count, since it was cached
                count = self._counts[topic] = _ensure_topic(db, self._default_spec(topic))

    def _rows(
        self, topic: str, messages: Sequence[Message], count: int
    ) -> tuple[list[int], list[Any], dict[int, int]]:
        """Each message's partition; the INSERT's parameters (`_FIELDS` a row, the
        offset slot holding the row's rank in its partition); how many rows each
        partition gets."""
        now = time.time()
        partitions: list[int] = []
        params: list[Any] = []
        ranks: dict[int, int] = {}
        for message in messages:
            key = message.key
            partition = next(self._round_robin) % count if key is None else partition_of(key, count)
            rank = ranks.get(partition, 0)
            ranks[partition] = rank + 1
            value = message.value
            size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
            partitions.append(partition)
            params += (
                topic,
                partition,
                rank,
                key,
                value,
                encode_headers(message.headers),
                now,
                size,
            )
        return partitions, params, ranks

    # ---------------------------------------------------------------- consume

    def consumer(
        self,
        group: str,
        topics: Iterable[str],
        *,
        session_timeout: float = 10.0,
        instance_id: str | None = None,
    ) -> Consumer:
        """`instance_id` is not needed here: a member whose process is gone is recognised
        as dead at once (`liveness.py`), whatever its name."""
        from tidegate.log.sqlite.consumer import SqliteConsumer

        names = sorted(set(topics))
        with self._tx() as db:
            for name in names:
                _ensure_topic(db, self._default_spec(name))
        return SqliteConsumer(self.path, group, names, session_timeout)

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        with self._lock:
            return fetch(self._db, topic, partition, offset, max_records)

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, offset FROM offsets WHERE group_id = ? AND topic = ?",
                (group, topic),
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    # ---------------------------------------------------------------- erasure

    def erase_records(self, topic: str, match: Callable[[Record], bool]) -> int:
        """Delete the matching records with `secure_delete` on (their bytes are
        overwritten, not left in free pages), then truncate the write-ahead log. A
        consumer reads past the gap: `fetch` asks for offsets from a position on."""
        with self._lock:
            partitions = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT partition FROM partitions WHERE topic = ?", (topic,)
                ).fetchall()
            ]
            gone: list[tuple[str, int, int]] = []
            for partition in partitions:
                offset = 0
                while page := fetch(self._db, topic, partition, offset, 5000):
                    gone += [(topic, partition, r.offset) for r in page if match(r)]
                    offset = page[-1].offset + 1
            if not gone:
                return 0
            self._db.execute("PRAGMA secure_delete = ON")
            try:
                with self._tx() as db:
                    db.executemany(
                        "DELETE FROM records WHERE topic = ? AND partition = ? AND offset = ?",
                        gone,
                    )
            finally:
                self._db.execute("PRAGMA secure_delete = OFF")
            # a reader holding the WAL defers the truncation to the next checkpoint
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(gone)

    def retention(self, topic: str) -> dict[str, str]:
        with self._lock:
            row = self._db.execute(
                "SELECT retention_seconds, retention_bytes FROM topics WHERE name = ?", (topic,)
            ).fetchone()
        if row is None:
            return {}
        seconds, size = row
        return {
            "retention_seconds": "unlimited" if seconds is None else f"{float(seconds):g}",
            "retention_bytes": "unlimited" if size is None else str(size),
        }

    # ---------------------------------------------------------------- retention

    def enforce_retention(self) -> int:
        removed = 0
        now = time.time()
        with self._tx() as db:
            topics = db.execute(
                "SELECT name, partitions, retention_seconds, retention_bytes FROM topics"
                " WHERE retention_seconds IS NOT NULL OR retention_bytes IS NOT NULL"
            ).fetchall()
            for name, count, seconds, size in topics:
                for partition in range(int(count)):
                    cutoff = -1
                    if seconds is not None:
                        row = db.execute(
                            "SELECT max(offset) FROM records WHERE topic = ? AND partition = ?"
                            " AND ts < ?",
                            (name, partition, now - float(seconds)),
                        ).fetchone()
                        if row and row[0] is not None:
                            cutoff = max(cutoff, int(row[0]))
                    if size is not None:
                        row = db.execute(
                            "SELECT max(offset) FROM (SELECT offset, sum(size) OVER"
                            " (ORDER BY offset DESC) AS kept FROM records"
                            " WHERE topic = ? AND partition = ?) WHERE kept > ?",
                            (name, partition, int(size)),
                        ).fetchone()
                        if row and row[0] is not None:
                            cutoff = max(cutoff, int(row[0]))
                    if cutoff < 0:
                        continue
                    cursor = db.execute(
                        "DELETE FROM records WHERE topic = ? AND partition = ? AND offset <= ?",
                        (name, partition, cutoff),
                    )
                    removed += int(cursor.rowcount)
                    db.execute(
                        "UPDATE partitions SET start_offset = max(start_offset, ?)"
                        " WHERE topic = ? AND partition = ?",
                        (cutoff + 1, name, partition),
                    )
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()


#: rows per multi-row INSERT: 8 parameters a row, far below SQLite's limit of 32,766
#: (3.32+; 999 before, where `_insert` takes fewer)
INSERT_ROWS = 1000
#: parameters a row (the columns of `records`), and where the offset is among them
_FIELDS = 8
_OFFSET = 2
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"


@functools.lru_cache(maxsize=8)
def _insert_sql(count: int) -> str:
    return "INSERT INTO records VALUES " + ", ".join([_ROW] * count)


def _advance(db: sqlite3.Connection, topic: str, heads: dict[int, int]) -> None:
    """The partitions' new next offsets, in one statement (they exist: an upsert that
    only ever updates)."""
    db.execute(
        "INSERT INTO partitions (topic, partition, next_offset) VALUES "
        + ", ".join(["(?, ?, ?)"] * len(heads))
        + " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        [value for p, offset in heads.items() for value in (topic, p, offset)],
    )


def _insert(db: sqlite3.Connection, params: list[Any], rows: int) -> None:
    """The records of one append, `INSERT_ROWS` to a statement.

    `executemany` steps once per row, and the sqlite3 module lets go of the GIL around
    every step: in `tidegate run`, where the worker keeps the GIL busy, each row then
    waits for the GIL again (measured: a 1,000-row append ran at
    a third of its speed beside one busy thread). One statement of many rows takes it
    back once per statement. An SQLite before 3.32 takes at most 999 parameters a
    statement: 124 rows."""
    per = INSERT_ROWS if sqlite3.sqlite_version_info >= (3, 32, 0) else min(INSERT_ROWS, 124)
    full = rows - rows % per
    if full:
        sql = _insert_sql(per)
        step = per * _FIELDS
        for start in range(0, full * _FIELDS, step):
            db.execute(sql, params[start : start + step])
    if full < rows:
        db.execute(_insert_sql(rows - full), params[full * _FIELDS :])


def _ensure_topic(db: sqlite3.Connection, spec: TopicSpec) -> int:
    """Create the topic inside the caller's transaction; return its partition count."""
    row = db.execute("SELECT partitions FROM topics WHERE name = ?", (spec.name,)).fetchone()
    if row is not None:
        return int(row[0])
    if spec.partitions < 1:
        raise LogError(f"topic {spec.name!r}: partitions must be at least 1")
    db.execute(
        "INSERT INTO topics VALUES (?, ?, ?, ?, ?)",
        (spec.name, spec.partitions, spec.retention_seconds, spec.retention_bytes, time.time()),
    )
    db.executemany(
        "INSERT INTO partitions (topic, partition) VALUES (?, ?)",
        [(spec.name, p) for p in range(spec.partitions)],
    )
    return spec.partitions


def fetch(
    db: sqlite3.Connection, topic: str, partition: int, offset: int, limit: int
) -> list[Record]:
    """Up to `limit` records of one partition from `offset` on (past any erased gap).

    A consumer reads 50,000 records a micro-batch here, on the thread that shares the
    GIL with the HTTP door: each Record is built with `tuple.__new__` (a NamedTuple's
    own `__new__` is a Python function, half the cost of the whole read), and `offset`
    and `ts` come back as int and float already (INTEGER and REAL NOT NULL columns)."""
    rows = db.execute(
        "SELECT offset, key, value, headers, ts FROM records"
        " WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
        (topic, partition, offset, limit),
    ).fetchall()
    new = tuple.__new__
    return [
        new(Record, (topic, partition, o, k, v, decode_headers(h), ts)) for o, k, v, h, ts in rows
    ]
