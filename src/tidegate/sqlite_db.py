"""The SQLite files tidegate keeps (metadata, the embedded event log, the online store):
how they are opened and how they are written.

Each is private (`private.py`), in WAL mode so readers in other processes never wait on
the writer, with `synchronous=NORMAL` (a committed write survives the process being
killed; only an OS crash or power loss can take back the last transactions). Writes go in
`immediate` transactions: the write lock is taken at BEGIN, waiting for another writer
process under the busy timeout, rather than failing later when a read lock cannot be
upgraded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tidegate.private import private_dir, private_file


def open_private(path: Path, timeout: float = 30) -> sqlite3.Connection:
    """A connection to the private database file at `path` (created 0600 when missing, its
    folders 0700), usable from any thread (callers serialise it), in autocommit mode
    (transactions are explicit: `immediate`), WAL and `synchronous=NORMAL`."""
    private_dir(path.parent)
    private_file(path, side_files=True, create=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on `db` (in autocommit mode): committed when the block ends,
    rolled back when it raises (anything, a KeyboardInterrupt too)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
