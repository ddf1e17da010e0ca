"""Tables of the embedded log, and how a connection to it is opened.

`records` is a rowid table with its key as a separate index: a record (about 100
bytes of event) inside a WITHOUT ROWID key b-tree made each append cost more (measured
with 1,000-row statements: 130k rows/s WITHOUT ROWID, 215k with a rowid; reads by
offset range alike). Files created before keep their WITHOUT ROWID table: every
statement reads both the same."""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
import zlib
from pathlib import Path

from tidegate.log.base import Headers
from tidegate.private import private_dir, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
  name TEXT PRIMARY KEY, partitions INTEGER NOT NULL,
  retention_seconds REAL, retention_bytes INTEGER, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
  topic TEXT NOT NULL, partition INTEGER NOT NULL,
  next_offset INTEGER NOT NULL DEFAULT 0,   -- the offset the next record gets
  start_offset INTEGER NOT NULL DEFAULT 0,  -- the earliest retained offset
  PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
  key BLOB, value BLOB, headers TEXT, ts REAL NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (topic, partition, offset)
);
CREATE TABLE IF NOT EXISTS groups (
  group_id TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS members (
  group_id TEXT NOT NULL, member_id TEXT NOT NULL, topics TEXT NOT NULL,
  heartbeat_at REAL NOT NULL, session_timeout REAL NOT NULL,
  process TEXT,  -- host/pid/start time: a member whose process is gone is dead at once
  PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (
  group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  member_id TEXT NOT NULL,
  PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
  group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  offset INTEGER NOT NULL, committed_at REAL NOT NULL,
  PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
"""


OPEN_ATTEMPTS = 50

_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def writer_lock(path: Path) -> threading.RLock:
    """The lock every connection of this process to the log file `path` holds around a
    write transaction (`BEGIN IMMEDIATE` ... `COMMIT`).

    Without it, the HTTP door's appends, the worker's change-stream appends and its
    consumer's commits (three connections in `tidegate run`) meet SQLITE_BUSY, and
    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between retries, however
    soon the other transaction ends: measured at 20k events/s, BEGIN waited up to 93 ms
    (p99 25 ms). A thread waiting on this lock wakes as soon as it is released. Other
    processes (a CLI command) still meet the busy handler, as before."""
    key = str(path.resolve())
    with _WRITERS_GUARD:
        lock = _WRITERS.get(key)
        if lock is None:
            lock = _WRITERS[key] = threading.RLock()
        return lock


def connect(path: Path) -> sqlite3.Connection:
    """Open the log file, retrying while another process holds it during its own setup.

    Switching to WAL and creating the schema can meet SQLITE_BUSY without SQLite's busy
    handler being consulted (e.g. while another connection recovers the WAL), so opening
    is retried with a short backoff instead of failing the HTTP request or the worker."""
    private_dir(path.parent)
    private_file(path, side_files=True, create=True)
    for attempt in range(OPEN_ATTEMPTS):
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=60)
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed append survives the process being killed; only
            # an OS crash or power loss can take back the last transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            _migrate(db)
            return db
        except sqlite3.OperationalError as err:
            db.close()
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(min(0.02 * (attempt + 1), 0.2))
    raise AssertionError("unreachable")


def _migrate(db: sqlite3.Connection) -> None:
    """Files written before members recorded their process get the column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(members)")}
    if "process" not in columns:
        try:
            db.execute("ALTER TABLE members ADD COLUMN process TEXT")
        except sqlite3.OperationalError as err:  # another process added it meanwhile
            if "duplicate column" not in str(err):
                raise


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


@functools.lru_cache(maxsize=1024)
def encode_headers(headers: Headers) -> str | None:
    """Encoded once per distinct headers (every event of a source carries the same)."""
    if not headers:
        return None
    return json.dumps([[name, value.decode("latin-1")] for name, value in headers])


@functools.lru_cache(maxsize=1024)
def decode_headers(text: str | None) -> Headers:
    """Headers are few and repeat (the source name): decoded once per distinct text."""
    if not text:
        return ()
    return tuple((str(name), str(value).encode("latin-1")) for name, value in json.loads(text))
