"""The mistakes a new user makes in the first hour: each gets a clear message and exit 2.

Never exit 70 ("This is a bug in tidegate") and never a traceback for a user's mistake.
Each case runs the installed `tidegate` command on a freshly scaffolded project that it
breaks in one way.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDEGATE, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "shop"
    created = run("init", str(target))
    assert created.returncode == 0, created.stderr
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def merge_key_with_typo(root: Path) -> None:
    """Anchors and `<<:` are fine; a typo inside the merged mapping is reported at its line."""
    edit(
        root / "sources" / "customers.yml",
        "  customer_id: {type: BIGINT, classification: user.unique_id, description: Customer id}",
        "  customer_id: &id {type: BIGINT, classification: user.unique_id, descripton: Id}",
    )
    edit(
        root / "sources" / "customers.yml",
        "  email: {type: VARCHAR, classification: user.contact.email}",
        "  email:\n    <<: *id\n    type: VARCHAR\n    classification: user.contact.email",
    )


def impossible_cron(root: Path) -> None:
    edit(root / "syncs" / "profiles_to_crm.yml", "trigger: on_build", "trigger: schedule")
    with (root / "syncs" / "profiles_to_crm.yml").open("a") as out:
        out.write("schedule: '0 9 31 4 *'\n")


def missing_source_file(root: Path) -> None:
    (root / "data" / "customers.csv").unlink()


def undeclared_column(root: Path) -> None:
    # The file lacks a column the source declares (build would die in DuckDB's binder).
    with (root / "sources" / "customers.yml").open("a") as out:
        out.write("  e_mail: {type: VARCHAR}\n")


def mistyped_column(root: Path) -> None:
    csv = root / "data" / "customers.csv"
    csv.write_text(csv.read_text().replace("2024-01-15", "fifteenth of January"))


def dangling_relationship(root: Path) -> None:
    edit(
        root / "products" / "customer_profile.yml",
        "  country: {type: VARCHAR, classification: user.contact.address.country}",
        "  country:\n    type: VARCHAR\n    classification: user.contact.address.country\n"
        "    checks: [{relationship: countries.code}]",
    )


def unknown_key(root: Path) -> None:
    edit(root / "products" / "customer_profile.yml", "owner:", "ownr:")


NO_PROJECT: list[tuple[list[str], int, list[str]]] = [
    (["frobnicate"], 2, ["No such command 'frobnicate'"]),
    (["build", "--nope"], 2, ["No such option: --nope"]),
    (["init"], 2, ["Missing argument"]),
    (["sync", "run"], 2, ["Missing argument"]),
    (["--version"], 0, ["tidegate 0.1.0"]),
    # a folder that cannot be written is the environment's fault, not a bug (exit 1)
    (["schema", "--out", "/proc/tidegate-schemas"], 1, ["error:", "/proc/tidegate-schemas"]),
]


@pytest.mark.parametrize(("args", "code", "needles"), NO_PROJECT, ids=lambda v: str(v))
def test_usage_mistakes(args: list[str], code: int, needles: list[str], tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    for needle in needles:
        assert needle in output
    assert "bug in tidegate" not in output
    assert "Traceback" not in output


BREAKS: list[tuple[Callable[[Path], None], list[str]]] = [
    (
        merge_key_with_typo,
        ["sources/customers.yml:12: [columns.customer_id.descripton]", "did you mean"],
    ),
    (impossible_cron, ["syncs/profiles_to_crm.yml:", "[schedule]", "0 9 31 4 *", "never exists"]),
    (missing_source_file, ["sources/customers.yml:6: [path]", "data/customers.csv", "not found"]),
    (undeclared_column, ["[columns.e_mail]", "'e_mail' is not in file", "did you mean 'email'"]),
    (mistyped_column, ["[columns.signed_up.type]", "declared DATE", "fifteenth of January"]),
    (dangling_relationship, ["[columns.country.checks.0]", "'countries'", "not a product"]),
    (unknown_key, ["[ownr]", "did you mean 'owner'", "valid here:"]),
]


@pytest.mark.parametrize(("breaker", "needles"), BREAKS, ids=lambda v: getattr(v, "__name__", ""))
def test_project_mistakes_fail_validate_with_exit_2(
    project: Path, breaker: Callable[[Path], None], needles: list[str]
) -> None:
    breaker(project)
    result = run("validate", str(project))
    assert result.returncode == 2, result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "bug in tidegate" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "breaker", [missing_source_file, undeclared_column, mistyped_column], ids=lambda v: v.__name__
)
def test_build_reports_the_same_mistakes_instead_of_crashing(
    project: Path, breaker: Callable[[Path], None]
) -> None:
    breaker(project)
    result = run("build", "-p", str(project))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sources/customers.yml:" in result.stderr
    assert "bug in tidegate" not in result.stderr
