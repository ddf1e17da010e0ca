"""`tidegate audit search` and `audit verify` on a built demo shop, from the command line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # wide enough for the table's ISO times and every column (the suite's env says 80)
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [TIDEGATE, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_search_json_and_table_then_truncation_is_caught(demo_copy: Path) -> None:
    shop = str(demo_copy)
    assert run("consent", "revoke", "42", "analytics", "-p", shop).returncode == 0
    found = run("audit", "search", "-p", shop, "--subject", "42", "--json")
    assert found.returncode == 0, found.stderr
    records = json.loads(found.stdout)
    assert records
    assert all("42" in r["subjects"] for r in records)
    assert records[-1]["action"] == "consent"
    assert records[-1]["purpose"] == "analytics"

    table = run("audit", "search", "-p", shop, "--action", "consent", "--since", "1h")
    assert table.returncode == 0, table.stderr
    assert "consent" in table.stdout
    bad = run("audit", "search", "-p", shop, "--since", "someday")
    assert bad.returncode == 1
    assert "not a time" in bad.stderr
    assert "Traceback" not in bad.stderr

    assert run("audit", "verify", "-p", shop).returncode == 0
    db = sqlite3.connect(str(demo_copy / ".tidegate" / "metadata.db"), isolation_level=None)
    last = db.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
    db.execute("DELETE FROM audit_log WHERE seq = ?", (last,))
    db.close()
    cut = run("audit", "verify", "-p", shop)
    assert cut.returncode == 1
    assert f"records {last}..{last} were removed" in cut.stdout


def test_a_log_from_before_the_keyed_chain_fails_verify_until_sealed(demo_copy: Path) -> None:
    """A project upgraded from the unkeyed chain: its records carry plain SHA-256 hashes."""
    import hashlib

    shop = str(demo_copy)
    db = sqlite3.connect(str(demo_copy / ".tidegate" / "metadata.db"), isolation_level=None)
    prev = "0" * 64
    for seq, body in db.execute("SELECT seq, body FROM audit_log ORDER BY seq").fetchall():
        digest = hashlib.sha256(f"{seq}\n{prev}\n{body}".encode()).hexdigest()
        db.execute(
            "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq)
        )
        prev = digest
    db.close()
    assert run("audit", "anchor", "-p", shop, "--reset").returncode == 0  # old anchor
    before = run("audit", "verify", "-p", shop)
    assert before.returncode == 1
    said = " ".join(before.stdout.split())  # as read, whatever the terminal's wrapping
    assert "old unkeyed hash" in said
    assert "tidegate audit seal" in said
    sealed = run("audit", "seal", "-p", shop)
    assert sealed.returncode == 0, sealed.stderr
    after = run("audit", "verify", "-p", shop)
    assert after.returncode == 0, after.stdout
    assert "not forged before it" in " ".join(after.stdout.split())
    assert "audit chain intact" in after.stdout
