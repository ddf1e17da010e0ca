"""A DuckDB delete leaves the deleted values in the file (row groups keep them behind a
deletion mask, dropped tables leave their blocks on the free list); `Warehouse.scrub`
makes them unreadable in the file's bytes while every other row stays."""

from __future__ import annotations

from pathlib import Path

from tidegate.store.warehouse import Warehouse

NEEDLE = "erasmus.tracewell.scrub@example.org"


def _bytes_hold(path: Path) -> bool:
    return NEEDLE.encode() in path.read_bytes()


def test_deleted_values_leave_the_file_only_when_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path)
    try:
        db = warehouse.db
        db.execute(
            "CREATE TABLE raw.people AS SELECT i AS id, 'person' || i || '@example.org' AS email"
            " FROM range(300) t(i)"
        )
        db.execute("INSERT INTO raw.people VALUES (987654321, ?)", [NEEDLE])
        db.execute("CREATE TABLE raw.old AS SELECT * FROM raw.people")
        db.execute("CHECKPOINT")
        assert _bytes_hold(path)

        db.execute("DELETE FROM raw.people WHERE id = 987654321")
        db.execute("DROP TABLE raw.old")
        db.execute("CHECKPOINT")
        assert _bytes_hold(path)  # what a plain delete and checkpoint leave behind

        warehouse.scrub(['raw."people"'])
        assert not _bytes_hold(path)
        row = db.execute("SELECT count(*), count(DISTINCT email) FROM raw.people").fetchone()
        assert row == (300, 300)
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%scrub%'"
        ).fetchall()
        assert tables == []  # the filler is gone
    finally:
        warehouse.close()
    assert not _bytes_hold(path)
