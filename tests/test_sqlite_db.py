"""The SQLite files tidegate keeps: opened private and in WAL, written in IMMEDIATE
transactions that roll back whatever their block raises."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tidegate.sqlite_db import immediate, open_private


def test_a_file_is_opened_private_in_wal(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    db = open_private(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        db.close()


def test_a_block_commits_or_rolls_back_and_the_connection_stays_usable(tmp_path: Path) -> None:
    db = open_private(tmp_path / "state.db")
    try:
        db.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
        with immediate(db) as tx:
            tx.execute("INSERT INTO t VALUES (1)")

        def interrupted() -> None:
            with immediate(db) as tx:
                tx.execute("INSERT INTO t VALUES (2)")
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        assert not db.in_transaction
        with immediate(db) as tx:
            tx.execute("INSERT INTO t VALUES (3)")
        assert [r[0] for r in db.execute("SELECT v FROM t ORDER BY v")] == [1, 3]
    finally:
        db.close()
