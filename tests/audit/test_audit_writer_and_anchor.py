"""Batched audit writing, the external anchor that catches a cut tail, and search."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tidegate.audit.anchor import AuditAnchor
from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.audit.search import AuditQuery, parse_time, search
from tidegate.errors import BadRequestError
from tidegate.meta.sqlite import SqliteMetadataStore

KEY = b"anchor-test-master-key"


def rec(i: int, **kw: object) -> AuditRecord:
    fields: dict[object, object] = {
        "action": "serve",
        "principal": f"p{i % 3}",
        "purpose": "support",
        "subjects": (str(i),),
        "at": 1_700_000_000.0 + i,
    }
    fields.update(kw)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def open_log(tmp: Path) -> tuple[SqliteMetadataStore, AuditLog]:
    store = SqliteMetadataStore(tmp / "m.db")
    return store, AuditLog(store, AuditAnchor(tmp / "anchor.json", KEY), key=KEY)


# ------------------------------------------------------------------ writer


def test_submitted_records_are_stored_in_order_and_chained(tmp_path: Path) -> None:
    store, log = open_log(tmp_path)
    log.append(rec(0, action="admin", subjects=()))
    threads = [
        threading.Thread(target=lambda k=k: [log.submit(rec(k * 100 + i)) for i in range(50)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    records = list(log.records())
    assert len(records) == 201
    assert [s for s, _ in records] == list(range(1, 202))
    assert log.verify() == []
    # per producing thread, submission order is kept
    for k in range(4):
        mine = [r.subjects[0] for _, r in records if r.subjects]
        mine = [m for m in mine if 100 * k <= int(m) < 100 * (k + 1)]
        assert mine == [str(k * 100 + i) for i in range(50)]
    log.close()
    store.close()


def test_sync_append_after_submits_keeps_submission_order(tmp_path: Path) -> None:
    store, log = open_log(tmp_path)
    for i in range(20):
        log.submit(rec(i))
    log.append(rec(99, action="admin"))
    actions = [r.action for _, r in log.records()]
    assert actions == ["serve"] * 20 + ["admin"]
    log.close()
    store.close()


def test_close_stores_everything_and_submit_after_close_still_lands(tmp_path: Path) -> None:
    store, log = open_log(tmp_path)
    for i in range(500):
        log.submit(rec(i))
    log.close()
    assert len(store.audit_records()) == 500
    log.submit(rec(1000))  # a new writer starts; nothing is dropped
    log.close()
    assert len(store.audit_records()) == 501
    assert log.verify() == []
    store.close()


def test_process_exit_without_close_loses_nothing(tmp_path: Path) -> None:
    """A clean interpreter exit runs the writer's atexit hook."""
    script = f"""
import sys
from pathlib import Path
from tidegate.audit.anchor import AuditAnchor
from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.meta.sqlite import SqliteMetadataStore
store = SqliteMetadataStore(Path({str(tmp_path)!r}) / "m.db")
log = AuditLog(store, AuditAnchor(Path({str(tmp_path)!r}) / "anchor.json", {KEY!r}), key={KEY!r})
for i in range(2000):
    log.submit(AuditRecord(action="serve", principal="p", subjects=(str(i),)))
sys.exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    store, log = open_log(tmp_path)
    assert len(store.audit_records()) == 2000
    assert log.verify() == []
    store.close()


def test_two_processes_appending_share_one_chain(tmp_path: Path) -> None:
    script = f"""
from pathlib import Path
from tidegate.audit.anchor import AuditAnchor
from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.meta.sqlite import SqliteMetadataStore
store = SqliteMetadataStore(Path({str(tmp_path)!r}) / "m.db")
log = AuditLog(store, AuditAnchor(Path({str(tmp_path)!r}) / "anchor.json", {KEY!r}), key={KEY!r})
for i in range(150):
    log.append(AuditRecord(action="admin", principal="proc"))
    log.submit(AuditRecord(action="serve", principal="proc"))
log.close()
"""
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store, log = open_log(tmp_path)
    assert len(store.audit_records()) == 900
    assert log.verify() == []
    head = AuditAnchor(tmp_path / "anchor.json", KEY).read()
    assert head is not None
    assert head.seq == 900
    store.close()


def test_failed_writes_are_retried_not_dropped(tmp_path: Path) -> None:
    store, log = open_log(tmp_path)
    blocker = sqlite3.connect(str(tmp_path / "m.db"), isolation_level=None, timeout=0)
    store._db.execute("PRAGMA busy_timeout = 0")  # fail fast while the blocker holds the lock
    blocker.execute("BEGIN IMMEDIATE")
    for i in range(10):
        log.submit(rec(i))
    assert not log.writer.flush(timeout=0.3)  # cannot land while the database is locked
    blocker.execute("ROLLBACK")
    assert log.writer.flush(timeout=30)
    assert len(store.audit_records()) == 10
    assert log.writer.failures >= 1
    assert log.verify() == []
    blocker.close()
    log.close()
    store.close()


def test_a_steady_trickle_of_submits_is_stored_in_batches(tmp_path: Path) -> None:
    """The serving path submits one record per request: the writer must gather them for
    its interval, not wake and commit once per record (which also took the GIL from the
    serving loop once per request)."""
    store, log = open_log(tmp_path)
    log.append(rec(0, action="admin", subjects=()))
    sizes: list[int] = []
    store_batch = log.write_batch

    def counted(batch: list[AuditRecord]) -> list[int]:
        sizes.append(len(batch))
        return store_batch(batch)

    log.write_batch = counted  # type: ignore[method-assign]
    for i in range(1, 101):
        log.submit(rec(i))
        time.sleep(0.002)  # a request every 2 ms, well inside the 20 ms interval
    log.flush()
    assert sum(sizes) == 100
    # woken on every submit it stored ~50 batches of 1-3; gathering, batches of ~10
    assert len(sizes) <= 25, sizes
    assert [s for s, _ in log.records()] == list(range(1, 102))
    assert log.verify() == []
    log.close()
    store.close()


# ------------------------------------------------------------------ anchor


@pytest.fixture
def filled(tmp_path: Path) -> tuple[SqliteMetadataStore, AuditLog]:
    store, log = open_log(tmp_path)
    for i in range(10):
        log.append(rec(i))
    return store, log


def raw(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(tmp / "m.db"), isolation_level=None)


def test_anchor_follows_the_head(filled: tuple[SqliteMetadataStore, AuditLog]) -> None:
    store, log = filled
    assert log.anchor is not None
    head = log.anchor.read()
    last = store.last_audit()
    assert head is not None
    assert last is not None
    assert (head.seq, head.hash) == (last.seq, last.hash)
    assert log.verify() == []


def test_truncated_tail_is_detected(
    tmp_path: Path, filled: tuple[SqliteMetadataStore, AuditLog]
) -> None:
    _, log = filled
    raw(tmp_path).execute("DELETE FROM audit_log WHERE seq > 7")
    issues = log.verify()
    assert [i.seq for i in issues] == [10]
    assert "records 8..10 were removed" in issues[0].problem


def test_truncated_then_regrown_tail_is_detected(
    tmp_path: Path, filled: tuple[SqliteMetadataStore, AuditLog]
) -> None:
    _, log = filled
    raw(tmp_path).execute("DELETE FROM audit_log WHERE seq > 7")
    for i in range(6):  # the log grows past the old head again, with other records
        log.append(rec(100 + i))
    issues = log.verify()
    assert [i.seq for i in issues] == [10]
    assert "cut and rewritten" in issues[0].problem
    assert log.anchor is not None
    head = log.anchor.read()
    assert head is not None
    assert head.seq == 10  # the anchor stayed as evidence


def test_edited_or_deleted_anchor_is_reported(
    tmp_path: Path, filled: tuple[SqliteMetadataStore, AuditLog]
) -> None:
    _, log = filled
    path = tmp_path / "anchor.json"
    data = json.loads(path.read_text())
    data["seq"] = 7
    path.write_text(json.dumps(data))
    assert "signature does not match" in log.verify()[0].problem
    path.unlink()
    assert "anchor (anchor.json) is missing" in log.verify()[0].problem
    log.append(rec(50))  # a missing anchor is not silently re-created
    assert "missing" in log.verify()[0].problem
    assert log.anchor is not None
    log.anchor.reset(log._store)
    assert log.verify() == []


# ------------------------------------------------------------------ search


def test_search_filters_combine(filled: tuple[SqliteMetadataStore, AuditLog]) -> None:
    _, log = filled
    log.append(rec(20, action="erasure", principal="dpo", subjects=(), detail={"subject": "3"}))
    assert [s for s, _ in search(log, AuditQuery(principal="p1"))] == [2, 5, 8]
    assert [s for s, _ in search(log, AuditQuery(subject="3"))] == [4, 11]
    assert [s for s, _ in search(log, AuditQuery(action="erasure"))] == [11]
    window = AuditQuery(since=1_700_000_002.0, until=1_700_000_005.0)
    assert [s for s, _ in search(log, window)] == [3, 4, 5]
    assert [s for s, _ in search(log, AuditQuery(principal="p0", purpose="support"), 2)] == [1, 4]
    assert list(search(log, AuditQuery(purpose="marketing"))) == []


def test_parse_time_forms() -> None:
    assert parse_time("2026-11-01") == 1_793_491_200.0
    assert parse_time("2026-11-01T00:00:00Z") == 1_793_491_200.0
    assert parse_time("1700000000") == 1_700_000_000.0
    with pytest.raises(BadRequestError, match="not a time"):
        parse_time("yesterday-ish")
