"""Contracts as ODCS v3 (checked against the official ODCS JSON Schema) and breaking diffs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.observe.contracts import diff, export_contract, import_contract
from tidegate.project import load_project
from tidegate.project.models import ProductConfig
from tidegate.project.observe_config import product_checks

from .test_quality_checks import PROFILE_CHECKS

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "tidegate" / "demo" / "project"


def odcs_problems(document: dict[str, object]) -> list[str]:
    """Violations of the official ODCS JSON Schema, as shipped by the pinned
    `open-data-contract-standard` package (a dev dependency: nothing installs at test time)."""
    import json
    from importlib import resources

    from jsonschema import Draft201909Validator

    schema_text = (
        resources.files("open_data_contract_standard").joinpath("schema.json").read_text("utf-8")
    )
    validator = Draft201909Validator(json.loads(schema_text))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_odcs_export_of_every_demo_product_validates_against_the_odcs_schema(
    small_project: Path, tmp_path: Path
) -> None:
    path = small_project / "products" / "customer_profile.yml"
    path.write_text(
        path.read_text()
        + PROFILE_CHECKS.replace(
            "all_vip, column: customer_id, to: vip", "all_c, column: customer_id, to: customers"
        )
    )
    projects = [load_project(DEMO), load_project(small_project)]
    written = []
    for project in projects:
        for name, product in project.products.items():
            target = tmp_path / f"{name}.odcs.yaml"
            document = export_contract(product.config, project.name, product.sql)
            target.write_text(yaml.safe_dump(document, sort_keys=False))
            written.append(target)
    for target in written:
        document = yaml.safe_load(target.read_text())
        assert document["apiVersion"].startswith("v3"), target
        assert odcs_problems(document) == [], target
    churn = yaml.safe_load((tmp_path / "churn_risk.odcs.yaml").read_text())
    assert churn["slaProperties"] == [
        {
            "property": "latency",
            "value": 1,
            "unit": "h",
            "element": "churn_risk",
            "description": "rows are visible to consumers at most this long after the change",
        }
    ]
    key = churn["schema"][0]["properties"][0]
    assert key["primaryKey"] is True
    assert key["classification"] == "user.unique_id"


def test_export_then_import_gives_the_contract_back(small_project: Path) -> None:
    path = small_project / "products" / "customer_profile.yml"
    path.write_text(path.read_text() + PROFILE_CHECKS)
    project = load_project(small_project, check=False)
    product = project.products["customer_profile"]
    again = ProductConfig.model_validate(
        import_contract(export_contract(product.config, project.name, product.sql))
    )
    original = product.config
    assert again.columns == original.columns
    assert (again.key, again.subject, again.purposes, again.freshness, again.owner) == (
        original.key,
        original.subject,
        original.purposes,
        original.freshness,
        original.owner,
    )

    def checks(config: ProductConfig) -> dict[str, object]:
        return {c.check_name: c.model_dump() for c in product_checks(config)}

    assert checks(again) == checks(original)
    assert diff(original, again) == []


BASE = {
    "name": "p",
    "owner": "team",
    "sql": "SELECT 1",
    "key": "id",
    "subject": "id",
    "freshness": "1h",
    "purposes": ["support", "analytics"],
    "columns": {
        "id": {"type": "BIGINT", "nullable": False},
        "email": {"type": "VARCHAR(50)", "classification": "user.contact.email"},
        "score": {"type": "INTEGER", "nullable": False},
        "note": {"type": "VARCHAR"},
    },
    "checks": [{"type": "row_count", "min": 1}],
}


def _with(**changes: object) -> ProductConfig:
    data = {**BASE, **changes}
    return ProductConfig.model_validate(data)


def _columns(**columns: object) -> dict[str, object]:
    merged = dict(BASE["columns"])  # type: ignore[call-overload]
    merged.update(columns)
    return {k: v for k, v in merged.items() if v is not None}


CASES = [
    # (id, new contract, expected [(kind, subject, breaking)])
    ("column removed", _with(columns=_columns(note=None)), [("column removed", "note", True)]),
    (
        "column renamed",
        _with(
            columns={k: v for k, v in _columns(remark={"type": "VARCHAR"}).items() if k != "note"}
        ),
        [("column renamed", "note", True)],
    ),
    (
        "column added",
        _with(columns=_columns(extra={"type": "DATE"})),
        [("column added", "extra", False)],
    ),
    (
        "type narrowed",
        _with(columns=_columns(score={"type": "SMALLINT", "nullable": False})),
        [("type narrowed", "score", True)],
    ),
    (
        "type widened",
        _with(columns=_columns(score={"type": "BIGINT", "nullable": False})),
        [("type widened", "score", False)],
    ),
    (
        "varchar shortened",
        _with(
            columns=_columns(email={"type": "VARCHAR(20)", "classification": "user.contact.email"})
        ),
        [("type narrowed", "email", True)],
    ),
    (
        "other family",
        _with(columns=_columns(score={"type": "VARCHAR", "nullable": False})),
        [("type narrowed", "score", True)],
    ),
    (
        "became nullable",
        _with(columns=_columns(score={"type": "INTEGER"})),
        [("nullability", "score", True)],
    ),
    (
        "became required",
        _with(columns=_columns(note={"type": "VARCHAR", "nullable": False})),
        [("nullability", "note", False)],
    ),
    (
        "classification tightened",
        _with(columns=_columns(note={"type": "VARCHAR", "classification": "user.contact.email"})),
        [("classification tightened", "note", True)],
    ),
    (  # weakening a classification lets more leave: breaking (issue 13)
        "classification removed",
        _with(columns=_columns(email={"type": "VARCHAR(50)", "classification": "none"})),
        [("classification weakened", "email", True)],
    ),
    (
        "classification weakened",
        _with(
            columns=_columns(
                email={"type": "VARCHAR(50)", "classification": "user.contact.address.country"}
            )
        ),
        [("classification weakened", "email", True)],
    ),
    (  # a finer category the policy treats the same way everywhere: no change that matters
        "classification refined",
        _with(
            columns=_columns(
                email={"type": "VARCHAR(50)", "classification": "user.contact.email.work"}
            )
        ),
        [("classification changed", "email", False)],
    ),
    ("purpose removed", _with(purposes=["support"]), [("purpose removed", "analytics", True)]),
    (
        "purpose added",
        _with(purposes=["support", "analytics", "marketing.email"]),
        [("purpose added", "marketing.email", False)],
    ),
    ("key changed", _with(key="email"), [("key changed", "email", True)]),
    ("freshness loosened", _with(freshness="1d"), [("freshness loosened", "p", True)]),
    ("freshness tightened", _with(freshness="5m"), [("freshness tightened", "p", False)]),
    ("check removed", _with(checks=[]), [("check removed", "row_count", True)]),
    (
        "check added",
        _with(checks=[*BASE["checks"], {"type": "not_null", "column": "email"}]),  # type: ignore[misc]
        [("check added", "email__not_null", False)],
    ),
    ("owner", _with(owner="other"), [("owner", "p", False)]),
    ("description", _with(description="now documented"), [("documentation", "p", False)]),
]


@pytest.mark.parametrize(("new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_contract_changes_are_classified(
    new: ProductConfig, expected: list[tuple[str, str, bool]]
) -> None:
    policy = load_project(DEMO).policy  # email is hashed/dropped for some purposes
    changes = diff(_with(), new, policy)
    assert [(c.kind, c.subject, c.breaking) for c in changes] == expected


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)


def test_verify_against_a_git_ref(small_project: Path) -> None:
    _git(small_project, "init", "-q")
    _git(small_project, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(small_project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    runner = CliRunner()
    args = ["contract", "verify", "--against", "HEAD", "-p", str(small_project)]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    path = small_project / "products" / "customer_profile.yml"
    text = path.read_text()
    broken = text.replace(
        "  country: {type: VARCHAR, classification: user.contact.address.country}\n", ""
    )
    broken = broken.replace("SELECT", "SELECT")
    path.write_text(broken)
    sql = small_project / "products" / "customer_profile.sql"
    sql.write_text(sql.read_text().replace("  country,\n", ""))
    failed = runner.invoke(app, args)
    assert failed.exit_code != 0
    assert "column removed country" in str(failed.exception)
    path.write_text(broken + "version: '2.0.0'\n")
    bumped = runner.invoke(app, args)
    assert bumped.exit_code == 0, bumped.output


def test_contract_diff_cli(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yml", tmp_path / "new.odcs.yaml"
    old.write_text(yaml.safe_dump(BASE))
    new.write_text(yaml.safe_dump(export_contract(_with(purposes=["support"]), "x", "SELECT 1")))
    result = CliRunner().invoke(app, ["contract", "diff", str(old), str(new)])
    assert result.exit_code == 1
    assert "purpose removed analytics" in result.output


def test_the_odcs_schema_check_rejects_a_broken_contract() -> None:
    """The schema check above is only worth something if it can fail."""
    assert odcs_problems({"apiVersion": "v3.0.2", "kind": "NotAContract"}) != []
