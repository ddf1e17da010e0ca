"""The sync state store: Arrow segments per checkpoint, folded back into one state."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa

from tidegate.meta.base import SyncedRow, SyncRowError
from tidegate.meta.sqlite import SqliteMetadataStore


def batch(keys: list[str], tag: str, subject: str | None = None) -> pa.Table:
    return pa.table(
        {
            "key": keys,
            "row_hash": [f"{tag}{k}" for k in keys],
            "subject": [subject or f"s{k}" for k in keys],
            "source_key": keys,
        }
    )


def hashes(store: SqliteMetadataStore, sync: str = "s") -> dict[str, str]:
    return {k: r.row_hash for k, r in store.synced_rows(sync).items()}


def test_fresh_changed_and_deleted_segments_fold_to_the_latest_row_per_key(
    tmp_path: Path,
) -> None:
    store = SqliteMetadataStore(tmp_path / "meta.db")
    store.checkpoint_sync("s", upserted=batch(["1", "2", "3"], "a"), fresh=True)
    store.checkpoint_sync("s", upserted=batch(["4", "5"], "a"), fresh=True)
    store.checkpoint_sync("s", upserted=batch(["2", "5"], "b"))  # changed rows
    store.checkpoint_sync("s", deleted=["3"])
    store.checkpoint_sync("s", upserted=batch(["3"], "c"), fresh=True)  # back after a delete
    store.checkpoint_sync("s", suppressed=[SyncedRow("4", "", "s4")])  # cannot delete: suppressed
    expected = {"1": "a1", "2": "b2", "3": "c3", "5": "b5"}
    assert hashes(store) == expected
    assert store.synced_count("s") == 4
    assert store.synced_count("other") == 0
    assert set(store.synced_rows_matching("s", ["2"], ["5"])) == {"2", "5"}
    assert store.compact_sync_state("s", max_segments=2) is True
    assert hashes(store) == expected
    assert store.compact_sync_state("s", max_segments=2) is False
    assert [s.key for s in store.sync_suppressions("s")] == ["4"]


def test_subject_locations_follow_the_state_and_errors_clear_when_rows_land(
    tmp_path: Path,
) -> None:
    store = SqliteMetadataStore(tmp_path / "meta.db")
    store.set_sync_target("s", "postgres:public.people")
    store.checkpoint_sync("s", upserted=batch(["1", "2"], "a", subject="ada"), fresh=True)
    store.checkpoint_sync("t", upserted=batch(["9"], "a", subject="ada"), fresh=True)
    store.checkpoint_sync("s", upserted=batch(["2"], "b", subject="bob"))  # row 2 changed owner
    where = [(loc.sync, loc.key, loc.destination) for loc in store.subject_locations("ada")]
    assert where == [("s", "1", "postgres:public.people"), ("t", "9", "")]
    store.checkpoint_sync("s", deleted=["1"])
    assert [loc.key for loc in store.subject_locations("ada")] == ["9"]

    error = SyncRowError("7", "eve", "h7", "CHECK failed", 1.0, 1.0, 1)
    store.checkpoint_sync("s", errors=[error])
    assert [e.key for e in store.sync_row_errors("s")] == ["7"]
    store.checkpoint_sync("s", upserted=batch(["7"], "z"), fresh=True)
    assert store.sync_row_errors("s") == []


def test_in_flight_batch_and_forget(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "meta.db")
    store.set_sync_inflight("s", batch(["1", "2"], "a"))
    assert [r.key for r in store.sync_inflight("s")] == ["1", "2"]
    store.checkpoint_sync("s", upserted=batch(["1"], "a"), clear_inflight=True, fresh=True)
    assert store.sync_inflight("s") == []
    store.forget_sync("s")
    assert store.synced_count("s") == 0


def test_state_of_an_older_version_is_migrated_into_segments(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE sync_rows (sync TEXT NOT NULL, key TEXT NOT NULL, row_hash TEXT NOT"
            " NULL, subject TEXT, source_key TEXT, written_at REAL, PRIMARY KEY (sync, key))"
        )
        db.execute(
            "CREATE TABLE sync_inflight (sync TEXT NOT NULL, key TEXT NOT NULL, row_hash TEXT"
            " NOT NULL, subject TEXT, source_key TEXT, PRIMARY KEY (sync, key))"
        )
        db.executemany(
            "INSERT INTO sync_rows VALUES (?, ?, ?, ?, ?, ?)",
            [("s", "1", "h1", "ada", "1", 5.0), ("s", "2", "h2", None, "2", 6.0)],
        )
        db.execute("INSERT INTO sync_inflight VALUES ('s', '3', 'h3', 'cy', '3')")
    store = SqliteMetadataStore(path)
    assert store.synced_rows("s") == {
        "1": SyncedRow("1", "h1", "ada", "1", 5.0),
        "2": SyncedRow("2", "h2", None, "2", 6.0),
    }
    assert [r.key for r in store.sync_inflight("s")] == ["3"]
    store.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "sync_rows" not in tables
