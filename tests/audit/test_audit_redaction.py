"""Erasure redacts a subject from the audit log and the chain still verifies; any other
change (an unauthorised redaction, a further edit, a forged authorisation) is reported."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.audit.redact import ERASURE_ACTION, Redactor, body_digest, redactions_for
from tidegate.meta.sqlite import SqliteMetadataStore

SUBJECT = "42"
TOKEN = "erased:0123abcd"

KEY = b"audit-test-key"


@pytest.fixture
def store(tmp_path: Path) -> SqliteMetadataStore:
    return SqliteMetadataStore(tmp_path / "meta.db")


def _fill(log: AuditLog) -> None:
    log.append(
        AuditRecord(action="serve", principal="app", subjects=(SUBJECT,), detail={"key": SUBJECT}),
        AuditRecord(action="serve", principal="app", subjects=("142",), detail={"key": "142"}),
        AuditRecord(
            action="sync_removal",
            principal="sync:crm",
            subjects=("7", SUBJECT),
            detail={"keys": [7, 42], "reason": f"subject {SUBJECT} has no legal basis"},
        ),
        AuditRecord(action="admin", principal="cli", rows=42),
    )


def _redact(log: AuditLog, store: SqliteMetadataStore, authorise: bool = True) -> dict[int, str]:
    bodies = redactions_for(store.audit_records(), Redactor([SUBJECT], TOKEN))
    if authorise:
        log.append(
            AuditRecord(
                action=ERASURE_ACTION,
                principal="dpo",
                detail={"redactions": [[s, body_digest(b)] for s, b in sorted(bodies.items())]},
            )
        )
    store.redact_audit(bodies)
    return bodies


def _raw(store: SqliteMetadataStore, sql: str, *params: object) -> None:
    db = sqlite3.connect(str(store.path))
    db.execute(sql, params)
    db.commit()
    db.close()


def test_redaction_replaces_only_the_subject_and_the_chain_verifies(
    store: SqliteMetadataStore,
) -> None:
    log = AuditLog(store, key=KEY)
    _fill(log)
    bodies = _redact(log, store)
    assert sorted(bodies) == [1, 3]  # not 142's record, not `rows: 42`
    records = dict(log.records())
    assert records[1].subjects == (TOKEN,)
    assert records[1].detail == {"key": TOKEN}
    assert records[2].subjects == ("142",)
    assert records[3].subjects == ("7", TOKEN)
    assert records[3].detail["keys"] == [7, TOKEN]
    assert records[3].detail["reason"] == f"subject {TOKEN} has no legal basis"
    assert records[4].rows == 42
    assert log.verify() == []


def test_an_unauthorised_redaction_is_reported(store: SqliteMetadataStore) -> None:
    log = AuditLog(store, key=KEY)
    _fill(log)
    _redact(log, store, authorise=False)
    assert [i.seq for i in log.verify()] == [1, 3]


def test_editing_a_redacted_body_again_is_reported(store: SqliteMetadataStore) -> None:
    log = AuditLog(store, key=KEY)
    _fill(log)
    _redact(log, store)
    _raw(store, "UPDATE audit_log SET body = replace(body, 'app', 'someone') WHERE seq = 1")
    issues = log.verify()
    assert [i.seq for i in issues] == [1]
    assert "edited" in issues[0].problem


def test_a_forged_authorisation_breaks_its_own_record(store: SqliteMetadataStore) -> None:
    log = AuditLog(store, key=KEY)
    _fill(log)
    _redact(log, store)
    # rewrite record 2 and "authorise" it by editing the erasure record's list
    _raw(store, "UPDATE audit_log SET body = replace(body, '142', '143') WHERE seq = 2")
    forged = next(s for s in store.audit_records() if s.seq == 5).body.replace(
        '"redactions":[', f'"redactions":[[2,"{body_digest("x")}"],'
    )
    _raw(store, "UPDATE audit_log SET body = ? WHERE seq = 5", forged)
    seqs = {i.seq for i in log.verify()}
    assert {2, 5} <= seqs


def test_an_authorisation_cannot_reach_forward(store: SqliteMetadataStore) -> None:
    """An erasure record authorises redactions of earlier records only."""
    log = AuditLog(store, key=KEY)
    log.append(
        AuditRecord(action=ERASURE_ACTION, principal="dpo", detail={"redactions": [[2, "00"]]})
    )
    log.append(AuditRecord(action="serve", principal="app", subjects=(SUBJECT,)))
    bodies = redactions_for(store.audit_records(), Redactor([SUBJECT], TOKEN))
    store.redact_audit(bodies)
    assert [i.seq for i in log.verify()] == [2]
