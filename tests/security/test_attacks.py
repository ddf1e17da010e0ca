"""The attacks of issue 13 ("No way around the guard or the audit trail"), each replayed
against a served demo shop (or its files) and shown to fail now.

One test per attack; the unit tests beside each module cover the details.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.keys import create_key
from tidegate.runtime.platform import Platform

from .conftest import Served

C360 = "/v1/products/customer_360"


def _headers(token: str, purpose: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Purpose": purpose}


# ---------------------------------------------------------------- 2. roles are not pooled


def test_pooled_roles_do_not_read_customer_360_for_support(served: Served) -> None:
    """Role A: support on churn_risk; role B: analytics on customer_360. Together they
    used to read customer_360 for support, email in clear."""
    token, _ = create_key(served.platform.meta, "pooled", ["churn_desk", "c360_analyst"])
    before = served.last_seq()
    response = served.client.get(f"{C360}/entities/1", headers=_headers(token, "support"))
    assert response.status_code == 403, response.text
    assert "email" not in response.text
    lookup = served.client.post(
        f"{C360}/lookup", json={"keys": ["1"]}, headers=_headers(token, "support")
    )
    assert lookup.status_code == 403, lookup.text
    records = served.audit_since(before)
    assert [r.outcome for r in records] == ["denied", "denied"]
    # each half still works on its own terms
    churn = served.client.get(
        "/v1/products/churn_risk/entities/1", headers=_headers(token, "support")
    )
    assert churn.status_code == 200, churn.text
    described = served.client.get(C360, headers={"Authorization": f"Bearer {token}"})
    assert described.json()["allowed_purposes"] == ["analytics"]


# ---------------------------------------------------------------- 6. keyed chain


def _raw_metadata(project_dir: Path) -> sqlite3.Connection:
    """The metadata database, opened the way an attacker with file access would."""
    return sqlite3.connect(str(project_dir / ".tidegate" / "metadata.db"), isolation_level=None)


def _forge_after(raw: sqlite3.Connection, record: AuditRecord) -> int:
    """Append `record` after the head, hashed the way the unkeyed chain was (SHA-256 over
    seq, previous hash and body): all an attacker without the audit key can compute."""
    seq, prev = raw.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    body = record.canonical()
    digest = hashlib.sha256(f"{seq + 1}\n{prev}\n{body}".encode()).hexdigest()
    raw.execute(
        "INSERT INTO audit_log (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
        (seq + 1, body, prev, digest),
    )
    return int(seq) + 1


def test_a_forged_record_appended_with_database_access_fails_verify(demo_copy: Path) -> None:
    raw = _raw_metadata(demo_copy)
    _forge_after(raw, AuditRecord(action="admin", principal="cli", detail={"op": "key.create"}))
    raw.close()
    with Platform.open(demo_copy) as platform:
        issues = platform.audit.verify()
    assert issues, "a record written without the audit key passed verify"
    assert any("key" in issue.problem for issue in issues), issues


def test_a_forged_erasure_authorisation_cannot_cover_a_rewritten_record(
    demo_copy: Path,
) -> None:
    raw = _raw_metadata(demo_copy)
    seq, body = raw.execute("SELECT seq, body FROM audit_log WHERE seq = 2").fetchone()
    rewritten = body.replace('"outcome":"', '"outcome":"x').replace("allowed", "nothing")
    assert rewritten != body
    _forge_after(
        raw,
        AuditRecord(
            action="erasure",
            principal="cli",
            detail={"redactions": [[seq, hashlib.sha256(rewritten.encode()).hexdigest()]]},
        ),
    )
    raw.execute("UPDATE audit_log SET body = ? WHERE seq = ?", (rewritten, seq))
    raw.close()
    with Platform.open(demo_copy) as platform:
        problems = {issue.seq for issue in platform.audit.verify()}
    assert seq in problems  # the rewritten record
    assert max(problems) > seq  # and the forged authorisation itself


# ---------------------------------------------------------------- 7. redaction: only the subject


def test_erasure_rewrites_only_the_subjects_fields_and_verify_stays_clean(
    demo_copy: Path,
) -> None:
    """Erasing subject `1` rewrote unrelated counts equal to 1; erasing a string equal to a
    principal's name rewrote every record of that principal, and a second erasure made
    verify report false problems."""
    from tidegate.privacy.requests import erase

    with Platform.open(demo_copy) as platform:
        platform.audit.append(
            AuditRecord(action="serve", principal="app", rows=1, detail={"found": 1}),
            AuditRecord(action="sync", principal="sync:crm_audience", rows=1, subjects=("7",)),
            AuditRecord(
                action="serve",
                principal="app",
                product="customer_360",
                rows=1,
                subjects=("1",),
                detail={"key": "1", "lookup": 1},
            ),
        )
        before = dict(platform.audit.records())
        erase(platform, "1", "dpo", reason="request 1")
        erase(platform, "sync:crm_audience", "dpo", reason="a subject named like a principal")
        erase(platform, "7", "dpo")
        after = dict(platform.audit.records())
        assert platform.audit.verify() == []
    changed = {seq for seq, record in before.items() if after[seq] != record}
    for seq in changed:
        old, new = before[seq], after[seq]
        # only declared subject fields changed: subjects, detail subject / key / keys
        assert (old.principal, old.rows, old.action, old.at) == (
            new.principal,
            new.rows,
            new.action,
            new.at,
        ), seq
        assert old.subject_count == new.subject_count or old.subject_count is None
        other = {k: v for k, v in old.detail.items() if k not in ("subject", "key", "keys")}
        assert {k: new.detail[k] for k in other} == other, seq
    principals = [r.principal for r in after.values()]
    assert principals.count("sync:crm_audience") == [r.principal for r in before.values()].count(
        "sync:crm_audience"
    )
    last = max(before)
    assert after[last - 2].detail == {"found": 1}
    assert after[last - 2].rows == 1
    assert after[last].subjects[0].startswith("erased:")
    assert after[last].detail["key"].startswith("erased:")
    assert after[last].detail["lookup"] == 1
    assert after[last - 1].subjects[0].startswith("erased:")


# ---------------------------------------------------------------- 3. pseudonyms stay pseudonymous


def _token_of(served: Served, purpose: str, key: str) -> str:
    """The pseudonym of `key` under `purpose`, computed from the master key directly."""
    from tidegate.privacy.secrets import load_master_key
    from tidegate.privacy.treatments import purpose_key

    master = load_master_key(served.platform.state_dir)
    return purpose_key(master, purpose).hmac_hex(key)


def test_a_hashed_purpose_never_echoes_the_clear_key_nor_answers_by_it(served: Served) -> None:
    """Under analytics (customer_id hashed) the answer said `"key": "42"` next to the hashed
    customer_id, and 10 batch lookups of clear ids rebuilt the whole token -> id table."""
    token, _ = create_key(served.platform.meta, "analyst-oracle", ["analyst"])
    headers = _headers(token, "analytics")
    clear = served.client.get(f"{C360}/entities/1", headers=headers)
    assert clear.status_code == 404, clear.text  # a clear id addresses nothing
    pseudonym = _token_of(served, "analytics", "1")
    found = served.client.get(f"{C360}/entities/{pseudonym}", headers=headers)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["key"] == pseudonym
    assert body["data"]["customer_id"] == pseudonym
    assert '"1"' not in found.text.replace(body["built_at"] or "", "")
    # batch lookups: clear ids find nothing, so they pair no token with an id
    ids = [str(i) for i in range(1, 201)]
    oracle = served.client.post(f"{C360}/lookup", json={"keys": ids}, headers=headers)
    assert oracle.status_code == 200, oracle.text
    assert not any(r["found"] for r in oracle.json()["results"])
    both = served.client.post(
        f"{C360}/lookup", json={"keys": [pseudonym, "1"]}, headers=headers
    ).json()["results"]
    assert [(r["key"], r["found"]) for r in both] == [(pseudonym, True), ("1", False)]
    assert both[0]["data"]["customer_id"] == pseudonym
    # a purpose that sees the key in clear still addresses it by its id
    support, _ = create_key(served.platform.meta, "support-desk", ["support_agent"])
    plain = served.client.get(f"{C360}/entities/1", headers=_headers(support, "support"))
    assert plain.status_code == 200
    assert plain.json()["key"] == "1"
    by_token = served.client.get(
        f"{C360}/entities/{pseudonym}", headers=_headers(support, "support")
    )
    assert by_token.status_code == 404
