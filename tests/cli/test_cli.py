"""The installed `tidegate` command: exit codes and messages, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDEGATE, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_init_then_validate_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "x"
    created = run("init", str(target), "--domain", "sales")
    assert created.returncode == 0, created.stderr
    checked = run("validate", str(target))
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stdout


def test_broken_project_names_file_and_line_without_traceback(tmp_path: Path) -> None:
    target = tmp_path / "x"
    run("init", str(target))
    yml = target / "products" / "customer_profile.yml"
    yml.write_text(yml.read_text().replace("owner:", "ownr:"))
    result = run("validate", str(target))
    assert result.returncode == 2
    assert "products/customer_profile.yml:" in result.stderr
    assert "unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_json_lists_problems(tmp_path: Path) -> None:
    import json

    target = tmp_path / "x"
    run("init", str(target))
    (target / "products" / "customer_profile.sql").write_text("SELECT nope FROM missing_table\n")
    result = run("validate", str(target), "--json")
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(
        p["file"] == "products/customer_profile.sql"
        and p["line"] == 1
        and "missing_table" in p["message"]
        for p in problems
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("sync", "run", "nope"), "no sync named"),
        (("validate", "/nonexistent/dir"), "not a project"),
        (("build", "--product", "ghost"), "unknown product(s): ghost"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    target = tmp_path / "x"
    run("init", str(target))
    result = run(*args, "-p", str(target)) if args[0] != "validate" else run(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert needle in result.stderr


def test_build_sync_and_audit_verify_from_the_command_line(tmp_path: Path) -> None:
    target = tmp_path / "x"
    run("init", str(target))
    built = run("build", "-p", str(target))
    assert built.returncode == 0, built.stderr
    assert "profiles_to_crm" in built.stdout
    verified = run("audit", "verify", "-p", str(target))
    assert verified.returncode == 0
    assert "intact" in verified.stdout
    import sqlite3

    db = sqlite3.connect(target / ".tidegate" / "metadata.db")
    db.execute("UPDATE audit_log SET body = replace(body, 'tidegate', 'mallory') WHERE seq = 1")
    db.commit()
    db.close()
    tampered = run("audit", "verify", "-p", str(target))
    assert tampered.returncode == 1
    assert "record 1" in tampered.stdout


def test_demo_no_serve_runs_the_whole_tour(tmp_path: Path) -> None:
    result = run("demo", "--no-serve", "--small", "--dir", str(tmp_path / "shop"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "→ 200" in out
    assert "→ 404" in out
    assert "→ 403" in out
    assert "gone from the CRM" in out
    assert "chain intact" in out
    assert shutil.which(TIDEGATE) or Path(TIDEGATE).exists()


def test_validate_against_a_git_ref_fails_a_breaking_change(tmp_path: Path) -> None:
    target = tmp_path / "x"
    run("init", str(target))
    git = ["git", "-C", str(target), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    assert run("validate", str(target), "--against", "HEAD").returncode == 0
    yml = target / "products" / "customer_profile.yml"
    yml.write_text(
        yml.read_text().replace(
            "  country: {type: VARCHAR, classification: user.contact.address.country}\n", ""
        )
    )
    sql = target / "products" / "customer_profile.sql"
    sql.write_text(sql.read_text().replace("  country,\n", ""))
    broken = run("validate", str(target), "--against", "HEAD")
    assert broken.returncode == 1
    assert "column removed country" in broken.stderr
    assert "Traceback" not in broken.stderr
    yml.write_text(yml.read_text() + "version: '2.0.0'\n")
    assert run("validate", str(target), "--against", "HEAD").returncode == 0


def test_consent_revoke_from_the_cli_removes_the_subject_from_destinations(
    tmp_path: Path,
) -> None:
    import sqlite3

    shop = tmp_path / "shop"
    assert run("demo", "--no-serve", "--small", "--dir", str(shop)).returncode == 0
    with sqlite3.connect(shop / "crm.db") as db:
        (subject,) = db.execute("SELECT min(customer_id) FROM audience").fetchone()
    shown = run("consent", "show", str(subject), "-p", str(shop))
    assert shown.returncode == 0, shown.stderr
    revoked = run("consent", "revoke", str(subject), "marketing.email", "-p", str(shop))
    assert revoked.returncode == 0, revoked.stderr
    assert "removed from sync crm_audience: deleted" in revoked.stdout
    with sqlite3.connect(shop / "crm.db") as db:
        held = {row[0] for row in db.execute("SELECT customer_id FROM audience")}
    assert subject not in held
    assert held  # only that subject left
    granted = run("consent", "grant", str(subject), "analytics", "-p", str(shop))
    assert granted.returncode == 0
    assert "removed from sync" not in granted.stdout
