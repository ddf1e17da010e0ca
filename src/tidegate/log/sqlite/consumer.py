"""A consumer-group member of the embedded log.

Membership is a row with a heartbeat time; polling is the heartbeat. Any change of
membership (a join, a close, a member whose heartbeat is older than its session
timeout, or whose process is gone: `liveness.py`) bumps the group's generation. On
seeing a new generation, each member works out the same target assignment (partitions
dealt round-robin over the members, in member-id order), gives up the partitions it
should no longer own, and claims the free ones it should. Ownership is a row per
partition, so two live members never own one partition at once: a partition moves only
after its old owner released it (at its next poll, after it processed what it had) or
was declared dead.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tidegate.errors import CommitFailedError, LogError
from tidegate.log.base import Consumer, Record, TopicPartition
from tidegate.log.sqlite.client import fetch
from tidegate.log.sqlite.liveness import is_gone, this_process
from tidegate.log.sqlite.schema import connect, writer_lock
from tidegate.sqlite_db import immediate

IDLE_SLEEP = 0.005


class SqliteConsumer(Consumer):
    def __init__(self, path: Path, group: str, topics: list[str], session_timeout: float) -> None:
        self.group = group
        self.topics = topics
        self.session_timeout = session_timeout
        self.member_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        self._db = connect(path)
        self._writer = writer_lock(path)
        self._owned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._generation = -1
        self._heartbeat = 0.0
        self._pending = True
        self._closed = False
        self._turn = 0
        with self._tx() as db:
            self._join(db)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # queued with the process's other writers (`writer_lock`)
        with self._writer, immediate(self._db) as db:
            yield db

    def _join(self, db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT OR REPLACE INTO members (group_id, member_id, topics, heartbeat_at,"
            " session_timeout, process) VALUES (?, ?, ?, ?, ?, ?)",
            (
                self.group,
                self.member_id,
                json.dumps(self.topics),
                time.time(),
                self.session_timeout,
                this_process(),
            ),
        )
        _bump(db, self.group)

    # ---------------------------------------------------------------- group protocol

    def _maintain(self) -> None:
        now = time.time()
        row = self._db.execute(
            "SELECT generation FROM groups WHERE group_id = ?", (self.group,)
        ).fetchone()
        generation = int(row[0]) if row else -1
        due = now - self._heartbeat > self.session_timeout / 3
        if generation != self._generation or due or self._pending:
            self._rebalance()

    def _rebalance(self) -> None:
        now = time.time()
        with self._tx() as db:
            alive = db.execute(
                "UPDATE members SET heartbeat_at = ? WHERE group_id = ? AND member_id = ?",
                (now, self.group, self.member_id),
            ).rowcount
            if not alive:  # declared dead while away: rejoin with nothing
                self._owned.clear()
                self._positions.clear()
                self._join(db)
            expired = db.execute(
                "DELETE FROM members WHERE group_id = ? AND heartbeat_at + session_timeout < ?",
                (self.group, now),
            ).rowcount
            others = db.execute(
                "SELECT member_id, process FROM members WHERE group_id = ? AND member_id != ?",
                (self.group, self.member_id),
            ).fetchall()
            for member, process in others:
                if not is_gone(process):
                    continue
                # Its process died (a kill -9): no need to wait for its session to end.
                expired += db.execute(
                    "DELETE FROM members WHERE group_id = ? AND member_id = ?",
                    (self.group, member),
                ).rowcount
            if expired:
                _bump(db, self.group)
            members = db.execute(
                "SELECT member_id, topics FROM members WHERE group_id = ? ORDER BY member_id",
                (self.group,),
            ).fetchall()
            db.execute(
                "DELETE FROM owners WHERE group_id = ? AND member_id NOT IN"
                " (SELECT member_id FROM members WHERE group_id = ?)",
                (self.group, self.group),
            )
            target = self._target(db, [(m, set(json.loads(t))) for m, t in members])
            for topic, partition in self._owned - target:
                db.execute(
                    "DELETE FROM owners WHERE group_id = ? AND topic = ? AND partition = ?"
                    " AND member_id = ?",
                    (self.group, topic, partition, self.member_id),
                )
            db.executemany(
                "INSERT OR IGNORE INTO owners VALUES (?, ?, ?, ?)",
                [(self.group, t, p, self.member_id) for t, p in sorted(target)],
            )
            owned = {
                (str(t), int(p))
                for t, p in db.execute(
                    "SELECT topic, partition FROM owners WHERE group_id = ? AND member_id = ?",
                    (self.group, self.member_id),
                )
            }
            for tp in owned - self._owned:
                self._positions[tp] = self._start_offset(db, tp)
            for tp in self._owned - owned:
                self._positions.pop(tp, None)
            self._owned = owned
            self._pending = owned != target
            row = db.execute(
                "SELECT generation FROM groups WHERE group_id = ?", (self.group,)
            ).fetchone()
            self._generation = int(row[0]) if row else -1
        self._heartbeat = now

    def _target(
        self, db: sqlite3.Connection, members: list[tuple[str, set[str]]]
    ) -> set[TopicPartition]:
        topics = sorted({t for _, subscribed in members for t in subscribed})
        marks = ",".join("?" * len(topics))
        counts = dict(
            db.execute(
                f"SELECT name, partitions FROM topics WHERE name IN ({marks})", topics
            ).fetchall()
        )
        mine: set[TopicPartition] = set()
        for topic in topics:
            candidates = [m for m, subscribed in members if topic in subscribed]
            for partition in range(int(counts.get(topic, 0))):
                if candidates[partition % len(candidates)] == self.member_id:
                    mine.add((topic, partition))
        return mine

    def _start_offset(self, db: sqlite3.Connection, tp: TopicPartition) -> int:
        row = db.execute(
            "SELECT offset FROM offsets WHERE group_id = ? AND topic = ? AND partition = ?",
            (self.group, *tp),
        ).fetchone()
        if row is not None:
            return int(row[0])
        row = db.execute(
            "SELECT start_offset FROM partitions WHERE topic = ? AND partition = ?", tp
        ).fetchone()
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- contract

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        if self._closed:
            raise LogError("poll on a closed consumer")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self._maintain()
            records = self._fetch(max_records)
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(min(IDLE_SLEEP, max(deadline - time.monotonic(), 0.0)))

    def _fetch(self, max_records: int) -> list[Record]:
        owned = sorted(self._owned)
        if not owned:
            return []
        self._turn = (self._turn + 1) % len(owned)
        found: list[Record] = []
        for tp in owned[self._turn :] + owned[: self._turn]:
            budget = max_records - len(found)
            if budget <= 0:
                break
            records = fetch(self._db, tp[0], tp[1], self._positions[tp], budget)
            if records:
                self._positions[tp] = records[-1].offset + 1
                found.extend(records)
        return found

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        wanted = dict(self._positions if offsets is None else offsets)
        if not wanted:
            return
        now = time.time()
        with self._tx() as db:
            lost = []
            for (topic, partition), offset in sorted(wanted.items()):
                owner = db.execute(
                    "SELECT member_id FROM owners WHERE group_id = ? AND topic = ?"
                    " AND partition = ?",
                    (self.group, topic, partition),
                ).fetchone()
                if owner is None or owner[0] != self.member_id:
                    lost.append(f"{topic}[{partition}]")
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?, ?)",
                    (self.group, topic, partition, int(offset), now),
                )
            db.execute(
                "UPDATE members SET heartbeat_at = ? WHERE group_id = ? AND member_id = ?",
                (now, self.group, self.member_id),
            )
        if lost:
            raise CommitFailedError(
                f"group {self.group!r}: partitions {', '.join(lost)} moved to another member; "
                "their records will be delivered again",
                partitions=lost,
            )

    def assignment(self) -> set[TopicPartition]:
        if not self._closed:
            self._maintain()
        return set(self._owned)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._tx() as db:
            db.execute(
                "DELETE FROM owners WHERE group_id = ? AND member_id = ?",
                (self.group, self.member_id),
            )
            db.execute(
                "DELETE FROM members WHERE group_id = ? AND member_id = ?",
                (self.group, self.member_id),
            )
            _bump(db, self.group)
        self._db.close()


def _bump(db: sqlite3.Connection, group: str) -> None:
    db.execute(
        "INSERT INTO groups VALUES (?, 1) ON CONFLICT (group_id)"
        " DO UPDATE SET generation = generation + 1",
        (group,),
    )
