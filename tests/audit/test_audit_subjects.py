"""Every subject that left is on record (issue 12 item 3).

A sync's audit record names a sample of 100 subjects in its body; before
`audit_subjects`, `audit search --subject` and the access package could not find the
sync for anyone past the 100th. Now every subject a sync (or export, or read) carried is
stored beside its record, found by search and access, and renamed by an erasure while
the keyed chain still verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tidegate.audit.search import AuditQuery, search
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.requests.subject_access import access
from tidegate.requests.subject_requests import erase

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))

POLICY = """
subject_types:
  member:
    lookup: [email]
purposes:
  crm:
    legal_basis: contract
roles:
  dpo:
    purposes: [crm]
    subject_requests: true
treatments:
  "*":
    user: clear
"""

SOURCE = """
name: members
type: file
path: data/members.parquet
key: member_id
subject: {column: member_id, type: member}
columns:
  member_id: {type: BIGINT, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  score: {type: BIGINT, classification: none}
"""

PRODUCT = """
name: member_scores
owner: crm
key: member_id
subject: {column: member_id, type: member}
purposes: [crm]
sql: SELECT member_id, email, score FROM members
columns:
  member_id: {type: BIGINT, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  score: {type: BIGINT, classification: none}
"""

SYNC = """
name: scores_out
product: member_scores
purpose: crm
trigger: manual
mode: upsert
destination: {type: sqlite, path: out/crm.db, table: scores}
"""


def write_members(root: Path, count: int) -> Path:
    for folder in ("sources", "products", "policies", "syncs", "data", "out"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tidegate.yml").write_text("name: members\n")
    (root / "policies" / "policy.yml").write_text(POLICY)
    (root / "sources" / "members.yml").write_text(SOURCE)
    (root / "products" / "member_scores.yml").write_text(PRODUCT)
    (root / "syncs" / "scores_out.yml").write_text(SYNC)
    ids = pa.array(range(1, count + 1), pa.int64())
    emails = pa.array([f"m{i}@example.com" for i in range(1, count + 1)])
    pq.write_table(
        pa.table({"member_id": ids, "email": emails, "score": ids}),
        root / "data" / "members.parquet",
    )
    return root


def _synced(root: Path) -> None:
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        report = run_sync(platform, "scores_out")
        assert not report.run_error, report


def test_a_subject_past_the_hundredth_is_found_by_search_and_access(tmp_path: Path) -> None:
    root = write_members(tmp_path / "members", 1000)
    _synced(root)
    with Platform.open(root) as platform:
        found = list(search(platform.audit, AuditQuery(subject="777", action="sync")))
        assert len(found) == 1
        _, record = found[0]
        assert "777" not in record.subjects  # the body holds only the sample
        assert record.subject_count == 1000
        assert record.subject_type == "member"
        package = access(platform, "777", "dpo")
        assert any(r["action"] == "sync" for r in package["audit"]), package["audit"]
        # a subject the sync never carried is not listed
        assert not list(search(platform.audit, AuditQuery(subject="1001", action="sync")))
    listed = subprocess.run(
        [TIDEGATE, "audit", "search", "--subject", "777", "--json", "-p", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    actions = [r["action"] for r in json.loads(listed.stdout)]
    assert "sync" in actions


def test_erasure_renames_the_subject_in_the_full_list_and_the_chain_verifies(
    tmp_path: Path,
) -> None:
    root = write_members(tmp_path / "members", 500)
    _synced(root)
    with Platform.open(root) as platform:
        report = erase(platform, "m321@example.com", "dpo", by="email")
        assert report.complete, report.as_json()
        audit_subjects = [s for s in report.systems if s.location == "metadata: audit_subjects"]
        assert audit_subjects[0].removed >= 1
        assert platform.meta.audit_subject_seqs("321") == []
        assert not list(search(platform.audit, AuditQuery(subject="321", action="sync")))
        assert platform.audit.verify() == []
        # the other subjects of the same sync are still on record
        assert len(list(search(platform.audit, AuditQuery(subject="322", action="sync")))) == 1


@pytest.mark.slow
def test_a_million_row_sync_records_every_subject(tmp_path: Path) -> None:
    root = write_members(tmp_path / "members", 1_000_000)
    started = time.perf_counter()
    _synced(root)
    took = time.perf_counter() - started
    with Platform.open(root) as platform:
        assert platform.meta.audit_subject_seqs("999999") != []
        assert platform.meta.audit_subject_seqs("1000001") == []
        assert platform.audit.verify() == []
    assert took < 300, took
