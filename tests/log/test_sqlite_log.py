"""What only the embedded log does itself: retention, fencing of stale members, registry."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tidegate.errors import CommitFailedError, LogError
from tidegate.log import Message, TopicSpec, open_event_log
from tidegate.log.sqlite import SqliteEventLog
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
