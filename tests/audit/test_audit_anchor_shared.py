"""The audit anchor when several hosts share PostgreSQL metadata: one compare-and-set
slot in the store that every writer advances, so a tail cut from the shared log is
caught whichever host verifies, and a forged slot is refused by its signature."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.audit.anchor import AuditAnchor
from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.meta import open_metadata
from tidegate.meta.base import MetadataStore
from tidegate.project.models import BackendsConfig

pytestmark = pytest.mark.services

KEY = b"shared-anchor-master-key"
SRC = Path(__file__).resolve().parents[2] / "src"

WRITER = """
import sys
from pathlib import Path
from tidegate.audit.anchor import AuditAnchor
from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.meta import open_metadata
from tidegate.project.models import BackendsConfig

dsn, schema, tag = sys.argv[1:4]
config = BackendsConfig.model_validate(
    {"metadata": {"type": "postgres", "dsn": dsn, "schema": schema}}
).metadata
store = open_metadata(config, Path("."))
key = bytes.fromhex(sys.argv[4])
log = AuditLog(store, AuditAnchor(Path("unused.json"), key, store), key=key)
for i in range(60):
    log.append(AuditRecord(action="serve", principal=tag, subjects=(str(i),)))
store.close()
"""


@pytest.fixture
def shared(pg_dsn: str) -> Iterator[tuple[str, str, MetadataStore]]:
    schema = f"anchor_{uuid.uuid4().hex[:10]}"
    config = BackendsConfig.model_validate(
        {"metadata": {"type": "postgres", "dsn": pg_dsn, "schema": schema}}
    ).metadata
    store = open_metadata(config, Path("."))
    yield pg_dsn, schema, store
    store.close()
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _log(store: MetadataStore, tmp: Path) -> AuditLog:
    return AuditLog(store, AuditAnchor(tmp / "never-written.json", KEY, store), key=KEY)


def test_writers_on_two_hosts_advance_one_anchor_and_a_cut_tail_shows(
    shared: tuple[str, str, MetadataStore], tmp_path: Path
) -> None:
    dsn, schema, store = shared
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, dsn, schema, tag, KEY.hex()],
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("host-a", "host-b")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    log = _log(store, tmp_path)
    last = store.last_audit()
    assert last is not None
    assert last.seq == 120
    assert log.anchor is not None
    head = log.anchor.read()
    assert head is not None
    assert (head.seq, head.hash) == (last.seq, last.hash)
    assert log.verify() == []
    assert not (tmp_path / "never-written.json").exists()  # the slot, not a local file

    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{schema}".audit_log WHERE seq > 100')
    issues = log.verify()
    assert [i.seq for i in issues] == [120]
    assert "records 101..120 were removed" in issues[0].problem


def test_a_forged_slot_is_refused_and_a_missing_one_is_reported(
    shared: tuple[str, str, MetadataStore], tmp_path: Path
) -> None:
    _, _, store = shared
    log = _log(store, tmp_path)
    for i in range(5):
        log.append(AuditRecord(action="serve", principal="p", subjects=(str(i),)))
    body = store.audit_anchor()
    assert body is not None
    forged = json.loads(body) | {"seq": 2}
    assert store.move_audit_anchor(json.dumps(forged), body)
    assert "signature does not match" in log.verify()[0].problem
    assert log.anchor is not None
    log.anchor.reset(store)
    assert log.verify() == []
    log.append(AuditRecord(action="serve", principal="p"))
    assert log.verify() == []
