"""What only the embedded log does itself: retention, fencing of stale members, registry,
and how appends are written (multi-row statements, one transaction)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.errors import CommitFailedError, LogError
from tidegate.log import Message, TopicSpec, open_event_log
from tidegate.log.base import Record
from tidegate.log.sqlite import SqliteEventLog
from tidegate.log.sqlite import client as sqlite_client
from tidegate.project.models import SqliteLogConfig


def _age_records(path: Path, topic: str, below_offset: int, seconds: float) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE records SET ts = ts - ? WHERE topic = ? AND offset < ?",
            (seconds, topic, below_offset),
        )


def test_retention_by_age_keeps_offsets_and_moves_readers_forward(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SqliteEventLog(path)
    log.create_topic(TopicSpec("t", 1, retention_seconds=3600))
    log.append("t", [Message(b"k", str(i).encode()) for i in range(10)])
    consumer = log.consumer("g", ["t"])
    consumer.poll(3, 1.0)
    consumer.commit()  # committed offset 3, below what retention will keep
    consumer.close()
    _age_records(path, "t", 6, 7200)
    assert log.enforce_retention() == 6
    assert [r.offset for r in log.read("t", 0, 0)] == [6, 7, 8, 9]
    log.append("t", [Message(b"k", b"10")])
    assert log.end_offsets("t") == {0: 11}  # offsets are never reused
    with log.consumer("g", ["t"]) as again:
        assert [r.offset for r in again.poll(100, 1.0)] == [6, 7, 8, 9, 10]
    log.close()


def test_retention_by_size_keeps_the_newest_bytes(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db")
    log.create_topic(TopicSpec("t", 1, retention_bytes=50))
    log.append("t", [Message(b"k", b"x" * 9) for _ in range(20)])  # 10 bytes each
    assert log.enforce_retention() == 15
    assert [r.offset for r in log.read("t", 0, 0)] == [15, 16, 17, 18, 19]
    log.close()


def test_a_member_declared_dead_cannot_commit_what_it_lost(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db")
    log.create_topic(TopicSpec("t", 2))
    log.append("t", [Message(f"k{i}".encode(), b"v") for i in range(10)])
    slow = log.consumer("g", ["t"], session_timeout=0.2)
    assert slow.poll(100, 1.0)
    time.sleep(0.3)  # misses its session: the other member takes everything
    fast = log.consumer("g", ["t"], session_timeout=5.0)
    deadline = time.monotonic() + 30
    while len(fast.assignment()) < 2:
        assert time.monotonic() < deadline
        fast.poll(100, 0.05)
    with pytest.raises(CommitFailedError, match="moved to another member"):
        slow.commit()
    assert log.committed("g", "t") == {}
    slow.close()
    fast.close()
    log.close()


def test_backends_register_by_name(tmp_path: Path) -> None:
    log = open_event_log(SqliteLogConfig(path="events.db"), tmp_path)
    assert isinstance(log, SqliteEventLog)
    assert log.path == tmp_path / "events.db"
    log.close()
    with pytest.raises(LogError, match="no topic"):
        SqliteEventLog(tmp_path / "x.db").partitions("missing")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.none() | st.binary(max_size=6),
                st.none() | st.binary(max_size=20),
                st.sampled_from([(), (("src", b"a"),), (("src", b"b"), ("x", b"\xff"))]),
            ),
            max_size=12,
        ),
        max_size=5,
    ),
    rows_per_statement=st.integers(1, 5),
)
def test_appended_batches_read_back_whole_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]]],
    rows_per_statement: int,
) -> None:
    """An append goes in as multi-row INSERTs of `INSERT_ROWS` rows and a shorter tail:
    whatever the batch sizes, every message is read back once, per partition in the order
    appended, with offsets 0, 1, 2 ... and the types `Record` promises."""
    path = tmp_path_factory.mktemp("log") / "log.db"
    log = SqliteEventLog(path)
    with pytest.MonkeyPatch.context() as patch:  # small statements: chunk and tail both met
        patch.setattr(sqlite_client, "INSERT_ROWS", rows_per_statement)
        expected: dict[int, list[Message]] = {p: [] for p in range(3)}
        log.create_topic(TopicSpec("t", 3))
        for batch in batches:
            messages = [Message(k, v, h) for k, v, h in batch]
            placed = log.append("t", messages)
            assert len(placed) == len(messages)
            for (_, partition), message in zip(placed, messages, strict=True):
                expected[partition].append(message)
    for partition, wanted in expected.items():
        records = log.read("t", partition, 0, 1000)
        assert [(r.key, r.value, r.headers) for r in records] == [tuple(m) for m in wanted]
        assert [r.offset for r in records] == list(range(len(wanted)))
        for record in records:
            assert isinstance(record, Record)
            assert (record.topic, record.partition) == ("t", partition)
            assert type(record.offset) is int
            assert type(record.timestamp) is float
    assert log.end_offsets("t") == {p: len(m) for p, m in expected.items()}
    log.close()


def test_a_batch_larger_than_one_statement_is_one_transaction(tmp_path: Path) -> None:
    """A 2,500-message append (three statements at the real `INSERT_ROWS`) either lands
    whole or not at all: a duplicate offset in the last statement undoes the first two."""
    log = SqliteEventLog(tmp_path / "log.db")
    log.create_topic(TopicSpec("t", 1))
    messages = [Message(None, str(i).encode()) for i in range(2500)]
    assert len(messages) > sqlite_client.INSERT_ROWS
    log.append("t", messages)
    assert [r.value for r in log.read("t", 0, 0, 5000)] == [m.value for m in messages]
    with sqlite3.connect(tmp_path / "log.db") as db:  # the last message's offset is taken
        db.execute("INSERT INTO records VALUES ('t', 0, 4999, NULL, X'00', NULL, 0, 1)")
    with pytest.raises(sqlite3.IntegrityError):
        log.append("t", messages)
    assert [r.offset for r in log.read("t", 0, 0, 10_000)] == [*range(2500), 4999]
    assert log.end_offsets("t") == {0: 2500}
    log.close()


def test_an_append_follows_a_topic_recreated_elsewhere_with_other_partitions(
    tmp_path: Path,
) -> None:
    """An appender remembers each topic's partition count between appends; a topic
    another connection deleted and created again with fewer partitions is written as it
    now is, never to a partition that no longer exists."""
    path = tmp_path / "log.db"
    appender, other = SqliteEventLog(path), SqliteEventLog(path)
    appender.create_topic(TopicSpec("t", 4))
    appender.append("t", [Message(f"k{i}".encode(), b"before") for i in range(20)])
    other.delete_topic("t")
    other.create_topic(TopicSpec("t", 2))
    placed = appender.append("t", [Message(f"k{i}".encode(), b"after") for i in range(20)])
    assert {p for _, p in placed} <= {0, 1}
    assert sum(appender.end_offsets("t").values()) == 20
    assert set(appender.end_offsets("t")) == {0, 1}
    assert sorted(r.value for p in (0, 1) for r in other.read("t", p, 0)) == [b"after"] * 20
    appender.close()
    other.close()


OLD_RECORDS = """
CREATE TABLE records (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
  key BLOB, value BLOB, headers TEXT, ts REAL NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID
"""


def test_a_file_with_the_earlier_records_table_is_read_and_written(tmp_path: Path) -> None:
    """Files written before `records` had a rowid keep their WITHOUT ROWID table: appends,
    reads, consumers, erasure and retention work on it as on a new file."""
    path = tmp_path / "log.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_RECORDS)
    log = SqliteEventLog(path)
    with sqlite3.connect(path) as db:
        [(sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records'").fetchall()
    assert "WITHOUT ROWID" in sql
    log.create_topic(TopicSpec("t", 2, retention_bytes=10_000))
    log.append("t", [Message(f"k{i}".encode(), f"v{i}".encode()) for i in range(40)])
    with log.consumer("g", ["t"]) as consumer:
        got = consumer.poll(100, 1.0)
        consumer.commit()
    assert sorted(r.value or b"" for r in got) == sorted(f"v{i}".encode() for i in range(40))
    assert log.erase_records("t", lambda r: r.key == b"k3") == 1
    assert sum(len(log.read("t", p, 0)) for p in (0, 1)) == 39
    assert log.enforce_retention() == 0
    log.close()


def test_a_new_file_keeps_records_in_a_rowid_table(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db")
    log.close()
    with sqlite3.connect(tmp_path / "log.db") as db:
        [(sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records'").fetchall()
    assert "WITHOUT ROWID" not in sql
