"""Commands that print a result print it as JSON with --json: one document on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def run_json(*args: str) -> Any:
    done = subprocess.run(
        [TIDEGATE, *args, "--json"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_json_everywhere_on_a_scaffolded_project(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    created = run_json("init", str(project))
    assert any(f.endswith("tidegate.yml") for f in created["files"])
    p = str(project)

    built = run_json("build", "-p", p)
    assert built["ok"] is True
    assert [r["product"] for r in built["products"]] == ["customer_profile"]
    assert built["products"][0]["rows"] > 0
    assert [s["sync"] for s in built["syncs"]] == ["profiles_to_crm"]

    plans = run_json("explain", "-p", p)
    assert plans[0]["product"] == "customer_profile"
    assert plans[0]["mode"]

    key = run_json("keys", "create", "-p", p, "--principal", "app", "--role", "support_agent")
    assert key["key"]
    assert key["roles"] == ["support_agent"]
    keys = run_json("keys", "list", "-p", p)
    assert [k["key_id"] for k in keys] == [key["key_id"]]
    assert "key" not in keys[0]  # the secret is never listed

    audit = run_json("audit", "verify", "-p", p)
    assert audit["intact"] is True
    assert audit["records"] >= 1

    lineage = run_json("lineage", "customer_profile.email", "-p", p)
    assert "customers.email" in json.dumps(lineage)

    choice = run_json("consent", "object", "2", "support", "-p", p)
    assert choice["choice"] == "object"
    assert choice["subject"] == "2"

    rotated = run_json("keys", "rotate", key["key_id"], "-p", p, "--grace", "0s")
    assert rotated["replaces"] == key["key_id"]
    revoked = run_json("keys", "revoke", rotated["key_id"], "-p", p)
    assert revoked == {"revoked": rotated["key_id"]}


def test_contract_verify_json(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    run_json("init", str(project))
    for step in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", "-C", str(project), *step], check=True, capture_output=True)
    verified = run_json("contract", "verify", "--against", "HEAD", "-p", str(project))
    assert verified == {"against": "HEAD", "checked": 1, "failures": []}
