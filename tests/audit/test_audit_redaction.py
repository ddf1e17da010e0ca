"""Erasure redacts a subject from the audit log and the chain still verifies; any other
change (an unauthorised redaction, a further edit, a forged authorisation) is reported."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.audit.redact import (
    ERASURE_ACTION,
    SubjectRedaction,
    body_digest,
    redactions_for,
)
from tidegate.meta.sqlite import SqliteMetadataStore

SUBJECT = "42"
TOKEN = "erased:0123abcd"
PRODUCT = "customer_360"
REDACTION = SubjectRedaction(SUBJECT, TOKEN, {PRODUCT: frozenset({SUBJECT})})

KEY = b"audit-test-key"


@pytest.fixture
def store(tmp_path: Path) -> SqliteMetadataStore:
    return SqliteMetadataStore(tmp_path / "meta.db")


def _fill(log: AuditLog) -> None:
    log.append(
        AuditRecord(
            action="serve",
            principal="app",
            product=PRODUCT,
            subjects=(SUBJECT,),
            detail={"key": SUBJECT},
        ),
        AuditRecord(
            action="serve",
            principal="app",
            product=PRODUCT,
            subjects=("142",),
            detail={"key": "142"},
        ),
        AuditRecord(
            action="sync_removal",
            principal="sync:crm",
            product=PRODUCT,
            subjects=("7", SUBJECT),
            detail={"keys": [7, 42], "reason": f"subject {SUBJECT} has no legal basis"},
        ),
        AuditRecord(action="admin", principal="cli", rows=42),
    )


def _redact(log: AuditLog, store: SqliteMetadataStore, authorise: bool = True) -> dict[int, str]:
    bodies = redactions_for(store.audit_records(), REDACTION)
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
    # free text is no declared subject field: it is never rewritten
    assert records[3].detail["reason"] == f"subject {SUBJECT} has no legal basis"
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
    bodies = redactions_for(store.audit_records(), REDACTION)
    store.redact_audit(bodies)
    assert [i.seq for i in log.verify()] == [2]


def test_values_equal_to_the_id_outside_subject_fields_are_never_touched(
    store: SqliteMetadataStore,
) -> None:
    """Issue 13: erasing `1` rewrote every count equal to 1; erasing a string equal to a
    principal's name rewrote that principal everywhere."""
    log = AuditLog(store, key=KEY)
    log.append(
        AuditRecord(action="serve", principal="1", rows=1, subject_count=1, detail={"found": 1}),
        AuditRecord(action="sync", principal="sync:crm", rows=1, detail={"not_found": 1}),
        AuditRecord(
            action="serve",
            principal="app",
            product="orders",  # keyed by order id: order `1` is not subject `1`
            subjects=("9",),
            detail={"key": "1"},
        ),
        AuditRecord(action="access", principal="dpo", subjects=("1",), detail={"subject": "1"}),
    )
    for subject in ("1", "sync:crm"):
        redaction = SubjectRedaction(subject, "erased:x", {PRODUCT: frozenset({subject})})
        bodies = redactions_for(store.audit_records(), redaction)
        assert sorted(bodies) == ([4] if subject == "1" else [])
    redacted = SubjectRedaction("1", "erased:x").record(
        {"subjects": ["1", 1, "11"], "detail": {"subject": 1, "subjects": 1}, "rows": 1}
    )
    assert redacted == {
        "subjects": ["erased:x", "erased:x", "11"],
        "detail": {"subject": "erased:x", "subjects": 1},
        "rows": 1,
    }


_ids = st.sampled_from(["1", "2", "42", "app", "sync:crm", "dpo"])


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(
        st.builds(
            lambda principal, rows, subjects, key, product: AuditRecord(
                action="serve",
                principal=principal,
                product=product,
                rows=rows,
                subjects=tuple(subjects),
                detail={"key": key, "count": rows},
            ),
            _ids,
            st.integers(0, 3),
            st.lists(_ids, max_size=3),
            _ids,
            st.sampled_from([PRODUCT, "orders", None]),
        ),
        max_size=8,
    ),
    erasures=st.lists(st.tuples(_ids, st.lists(_ids, max_size=2)), min_size=1, max_size=5),
)
def test_verify_stays_clean_after_any_number_of_erasures(
    records: list[AuditRecord], erasures: list[tuple[str, list[str]]]
) -> None:
    """Each erasure: redactions computed, authorised by a chained erasure record (which
    may itself name subjects a later erasure redacts), then applied."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteMetadataStore(Path(tmp) / "meta.db")
        try:
            log = AuditLog(store, key=KEY)
            if records:
                log.append(*records)
            for subject, named in erasures:
                redaction = SubjectRedaction(
                    subject, f"erased:{subject}!", {PRODUCT: frozenset({subject})}
                )
                bodies = redactions_for(store.audit_records(), redaction)
                log.append(
                    AuditRecord(
                        action=ERASURE_ACTION,
                        principal="dpo",
                        subjects=tuple(named),
                        detail={
                            "redactions": [[s, body_digest(b)] for s, b in sorted(bodies.items())]
                        },
                    )
                )
                store.redact_audit(bodies)
                assert log.verify() == [], (subject, bodies)
            erased = {subject for subject, _ in erasures}
            for seq, record in log.records():
                if seq <= len(records):  # the original records name no erased subject
                    assert not erased & set(record.subjects), record
        finally:
            store.close()


def test_run_stats_keep_their_counts_when_subject_1_is_erased() -> None:
    """Run stats are JSON: erasing subject `1` must replace the key `1` in a list of keys
    and in text, never the count `rows: 1` (that broke the JSON and the next sync run)."""
    import json as _json

    from tidegate.audit.redact import Redactor

    redactor = Redactor(["1", "ada@example.com"], "pseud:abc")
    stats = _json.dumps(
        {"rows": 1, "inserted": 1, "keys": [1, 2, "1"], "error": "row 1 (ada@example.com) failed"}
    )
    out = _json.loads(redactor.json_text(stats))
    assert out["rows"] == 1
    assert out["inserted"] == 1
    assert out["keys"] == ["pseud:abc", 2, "pseud:abc"]
    assert out["error"] == "row pseud:abc (pseud:abc) failed"
    assert redactor.json_text("plain text about 1") == "plain text about pseud:abc"
