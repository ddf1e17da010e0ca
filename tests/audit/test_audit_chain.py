"""The audit log is hash-chained: edits made directly in the SQLite file are found.

Every tampering here goes around tidegate, straight into the metadata database with
`sqlite3`, the way someone with file access would.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.audit.log import GENESIS, AuditLog, AuditRecord, ChainIssue, chain_hash
from tidegate.meta.sqlite import SqliteMetadataStore
from tidegate.privacy.treatments import purpose_key

RECORDS = 6

KEY = b"audit-test-key"


def sample_records() -> list[AuditRecord]:
    return [
        AuditRecord(
            action=("serve", "sync", "export", "admin", "deny", "consent")[i % 6],
            principal=f"principal-{i}",
            purpose="analytics" if i % 2 else "support",
            product="customer_360",
            columns={"customer_id": "hash", "email": "drop", "country": "clear"},
            rows=i * 10,
            subjects=tuple(str(s) for s in range(i)),
            outcome="allowed" if i != 4 else "forbidden",
            detail={"key": str(i), "note": "Zoë ✓"},
            at=1_700_000_000.0 + i,
        )
        for i in range(RECORDS)
    ]


class Chain:
    """An audit log in a file, plus raw access to the file for tampering."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SqliteMetadataStore(path)
        self.log = AuditLog(self.store, key=KEY)
        self.raw = sqlite3.connect(str(path), isolation_level=None)

    def fill(self) -> list[int]:
        records = sample_records()
        seqs = self.log.append(*records[:2])  # a batch...
        for record in records[2:]:  # ...then one at a time
            seqs += self.log.append(record)
        return seqs

    def row(self, seq: int) -> tuple[str, str, str]:
        found = self.raw.execute(
            "SELECT body, prev_hash, hash FROM audit_log WHERE seq = ?", (seq,)
        ).fetchone()
        assert found is not None
        return found[0], found[1], found[2]

    def set_body(self, seq: int, body: str, *, rehash: bool = False) -> None:
        _, prev, digest = self.row(seq)
        if rehash:
            digest = chain_hash(seq, prev, body)
        self.raw.execute(
            "UPDATE audit_log SET body = ?, hash = ? WHERE seq = ?", (body, digest, seq)
        )

    def close(self) -> None:
        self.raw.close()
        self.store.close()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = Chain(tmp_path / "m.db")
    assert c.fill() == list(range(1, RECORDS + 1))
    yield c
    c.close()


def first_seq(issues: list[ChainIssue]) -> int:
    assert issues, "tampering was not detected"
    return min(i.seq for i in issues)


def test_untouched_chain_verifies_clean(chain: Chain) -> None:
    assert chain.log.verify() == []
    assert [r.principal for _, r in chain.log.records()] == [r.principal for r in sample_records()]
    # the chain starts at the genesis hash and each record links to the one before
    rows = [chain.row(seq) for seq in range(1, RECORDS + 1)]
    assert rows[0][1] == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after[1] == before[2]


def test_empty_log_verifies_clean(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.db")
    assert AuditLog(store, key=KEY).verify() == []
    store.close()


def test_records_round_trip_through_canonical_form() -> None:
    for record in sample_records():
        body = record.canonical()
        assert AuditRecord.from_canonical(body).canonical() == body


def test_edited_body_is_named(chain: Chain) -> None:
    body, _, _ = chain.row(3)
    chain.set_body(3, body.replace('"rows":20', '"rows":2'))
    assert chain.log.verify() == [
        ChainIssue(
            3, "content does not match its keyed hash: edited, or written without the audit key"
        )
    ]


def test_edited_body_with_recomputed_own_hash_is_named_and_breaks_the_next_link(
    chain: Chain,
) -> None:
    body, _, _ = chain.row(3)
    forged = body.replace('"outcome":"allowed"', '"outcome":"denied"')
    assert forged != body
    chain.set_body(3, forged, rehash=True)  # without the key: the old unkeyed hash
    issues = chain.log.verify()
    assert [i.seq for i in issues] == [3, 4]
    assert "without the audit key" in issues[0].problem
    assert "previous-hash link is broken" in issues[1].problem


def test_edited_last_record_is_detected(chain: Chain) -> None:
    body, _, _ = chain.row(RECORDS)
    chain.set_body(RECORDS, body.replace("principal-5", "principal-X"))
    assert [i.seq for i in chain.log.verify()] == [RECORDS]


def test_edited_hash_column_is_detected(chain: Chain) -> None:
    chain.raw.execute("UPDATE audit_log SET hash = ? WHERE seq = 2", ("f" * 64,))
    issues = chain.log.verify()
    assert {i.seq for i in issues} == {2, 3}  # its own hash, and the next record's link


def test_deleted_middle_record_is_named(chain: Chain) -> None:
    chain.raw.execute("DELETE FROM audit_log WHERE seq = 3")
    issues = chain.log.verify()
    assert first_seq(issues) == 4
    problems = " ".join(i.problem for i in issues if i.seq == 4)
    assert "sequence jumps from 2 to 4" in problems
    assert "previous-hash link is broken" in problems
    assert {i.seq for i in issues} == {4}


def test_deleted_first_record_is_named(chain: Chain) -> None:
    chain.raw.execute("DELETE FROM audit_log WHERE seq = 1")
    assert first_seq(chain.log.verify()) == 2


def test_forged_record_inserted_in_the_middle_is_detected(chain: Chain) -> None:
    # make room at seq 4 by moving the later records up, then insert a well-formed
    # record that links correctly to seq 3 and carries its own correct hash
    for seq in range(RECORDS, 3, -1):
        chain.raw.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq + 1, seq))
    _, _, hash3 = chain.row(3)
    body = AuditRecord(action="admin", principal="mallory", at=1_700_000_003.5).canonical()
    chain.raw.execute(
        "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
        (4, body, hash3, chain_hash(4, hash3, body)),
    )
    issues = chain.log.verify()
    # the forged record's link is right but its hash is not keyed; its successor breaks
    assert first_seq(issues) == 4
    assert "without the audit key" in issues[0].problem
    assert any(i.seq == 5 and "previous-hash link" in i.problem for i in issues)


def test_forged_record_with_its_own_hash_but_a_made_up_link_is_detected(chain: Chain) -> None:
    body = AuditRecord(action="admin", principal="mallory", at=1_800_000_000.0).canonical()
    prev = "1" * 64
    chain.raw.execute(
        "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
        (RECORDS + 1, body, prev, chain_hash(RECORDS + 1, prev, body)),
    )
    issues = chain.log.verify()
    assert [i.seq for i in issues] == [RECORDS + 1, RECORDS + 1]
    assert "previous-hash link is broken" in issues[0].problem
    assert "without the audit key" in issues[1].problem


def test_swapped_records_are_detected(chain: Chain) -> None:
    # move record 2 to seq 4 and record 4 to seq 2, each with its body, link and hash
    chain.raw.execute("UPDATE audit_log SET seq = -1 WHERE seq = 2")
    chain.raw.execute("UPDATE audit_log SET seq = 2 WHERE seq = 4")
    chain.raw.execute("UPDATE audit_log SET seq = 4 WHERE seq = -1")
    issues = chain.log.verify()
    assert first_seq(issues) == 2
    assert {i.seq for i in issues} >= {2, 3, 4}


def test_swapped_bodies_are_detected(chain: Chain) -> None:
    body2, _, _ = chain.row(2)
    body5, _, _ = chain.row(5)
    chain.raw.execute("UPDATE audit_log SET body = ? WHERE seq = 2", (body5,))
    chain.raw.execute("UPDATE audit_log SET body = ? WHERE seq = 5", (body2,))
    assert {i.seq for i in chain.log.verify()} == {2, 5}


def test_a_chain_continues_after_reopening(tmp_path: Path) -> None:
    first = Chain(tmp_path / "m.db")
    first.fill()
    first.close()
    second = Chain(tmp_path / "m.db")
    assert second.log.append(AuditRecord(action="admin", principal="later")) == [RECORDS + 1]
    assert second.log.verify() == []
    second.close()


# ------------------------------------------------------------------ no secrets


def test_canonical_form_holds_only_the_audit_fields() -> None:
    record = sample_records()[3]
    body = json.loads(record.canonical())
    assert set(body) == {
        "action",
        "principal",
        "purpose",
        "product",
        "columns",
        "rows",
        "subjects",
        "subject_count",
        "outcome",
        "detail",
        "at",
    }
    assert body["columns"] == {"customer_id": "hash", "email": "drop", "country": "clear"}


def test_records_of_hashed_egress_carry_no_key_material() -> None:
    master = b"\x01\x02secret-master-key-bytes\xfe"
    key = purpose_key(master, "analytics")
    record = AuditRecord(
        action="sync",
        principal="sync:crm",
        purpose="analytics",
        product="customer_360",
        columns={"customer_id": "hash"},
        rows=3,
        subjects=("1", "2", "3"),
    )
    text = record.canonical()
    for secret in (master, key.key, key.inner_pad, key.outer_pad):
        assert secret.hex() not in text
        assert secret.hex().upper() not in text
        assert repr(secret) not in text
    assert "key" not in json.loads(text)["columns"].values()


# ------------------------------------------------------------------ property

_bodies: dict[int, str] = {
    i + 1: r.canonical() for i, r in enumerate(sample_records())
}  # what the chain holds, for drawing positions


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_single_byte_edit_of_any_body_is_detected(data: st.DataObject) -> None:
    seq = data.draw(st.integers(1, RECORDS), label="seq")
    original = _bodies[seq].encode("utf-8")
    assert original.isascii()  # canonical JSON escapes non-ASCII text
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(st.integers(0, 127).filter(lambda b: b != original[position]), label="byte")
    edited = original[:position] + bytes([byte]) + original[position + 1 :]
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain(Path(tmp) / "m.db")
        try:
            chain.fill()
            assert chain.row(seq)[0].encode() == original
            # an attacker may recompute the edited record's own hash, without the key:
            # the record itself is named, even the last one
            rehash = data.draw(st.booleans(), label="rehash")
            chain.set_body(seq, edited.decode("ascii"), rehash=rehash)
            assert first_seq(chain.log.verify()) == seq
        finally:
            chain.close()


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, 150), byte=st.integers(128, 255))
def test_non_utf8_byte_stored_as_blob_is_detected(position: int, byte: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain(Path(tmp) / "m.db")
        try:
            chain.fill()
            original = chain.row(2)[0].encode()
            position %= len(original)
            edited = original[:position] + bytes([byte]) + original[position + 1 :]
            chain.raw.execute("UPDATE audit_log SET body = ? WHERE seq = 2", (edited,))
            assert first_seq(chain.log.verify()) == 2
        finally:
            chain.close()


def test_non_utf8_byte_stored_as_text_is_named(chain: Chain) -> None:
    original = chain.row(2)[0].encode()
    edited = original[:5] + b"\xff" + original[6:]
    chain.raw.execute("UPDATE audit_log SET body = CAST(? AS TEXT) WHERE seq = 2", (edited,))
    assert first_seq(chain.log.verify()) == 2


# ---------------------------------------------------------------- keyed chain (issue 13)


def _write_unkeyed(chain: Chain, records: list[AuditRecord]) -> None:
    """A log as tidegate wrote it before the chain was keyed (plain SHA-256)."""
    prev = GENESIS
    for seq, record in enumerate(records, start=1):
        body = record.canonical()
        digest = chain_hash(seq, prev, body)
        chain.raw.execute(
            "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
            (seq, body, prev, digest),
        )
        prev = digest


def test_the_chain_is_keyed_a_wrong_key_verifies_nothing(chain: Chain) -> None:
    other = AuditLog(chain.store, key=b"not-the-audit-key")
    assert {i.seq for i in other.verify()} == set(range(1, RECORDS + 1))


def test_an_old_unkeyed_chain_is_reported_until_sealed_then_noted(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "m.db")
    try:
        _write_unkeyed(chain, sample_records()[:3])
        (issue,) = chain.log.verify()
        assert issue.seq == 3
        assert "old unkeyed hash" in issue.problem
        assert "tidegate audit seal" in issue.problem
        chain.log.append(AuditRecord(action="serve", principal="app"))  # keyed from here
        assert [i.seq for i in chain.log.verify()] == [3]  # a later record is no seal
        seal = chain.log.seal("reviewer")
        assert seal == 5
        report = chain.log.verification()
        assert report.issues == []
        (note,) = report.notes
        assert "records 1..3" in note
        assert "not forged before it" in note
        assert chain.log.seal("reviewer") is None  # nothing left to seal
        # after the seal: editing an old record, even rehashed the old way, is caught
        body, _, _ = chain.row(2)
        chain.set_body(2, body.replace("principal-1", "principal-X"), rehash=True)
        (issue,) = chain.log.verify()  # consistent by itself; the next link is not
        assert issue.seq == 3
        assert "previous-hash link" in issue.problem
    finally:
        chain.close()


def test_unkeyed_records_after_keyed_ones_are_forgeries(chain: Chain) -> None:
    body = AuditRecord(action="erasure", principal="mallory").canonical()
    _, _, last = chain.row(RECORDS)
    seq = RECORDS + 1
    chain.raw.execute(
        "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
        (seq, body, last, chain_hash(seq, last, body)),
    )
    (issue,) = chain.log.verify()
    assert issue.seq == seq
    assert "forged" in issue.problem


def test_every_text_field_is_capped_and_capping_round_trips() -> None:
    """Issue 13: a 16 MB X-Purpose header wrote a 16 MB audit record."""
    huge = "x" * 100_000
    record = AuditRecord(
        action=huge,
        principal=huge,
        purpose=huge,
        product=huge,
        outcome=huge,
        columns={huge: huge},
        subjects=(huge,),
        detail={"reason": huge, huge: [huge, {"k": huge}], "n": 1},
    )
    body = record.canonical()
    assert len(body) < 6_000
    assert len(record.purpose or "") == 128
    assert record.purpose is not None
    assert record.purpose.endswith("…")
    assert AuditRecord.from_canonical(body).canonical() == body  # capping is idempotent
    small = AuditRecord(action="serve", principal="app", detail={"keys": ["1"] * 2_000})
    assert len(small.detail["keys"]) == 2_000  # lists are the producer's: kept whole
