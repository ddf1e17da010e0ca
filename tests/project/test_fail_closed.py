"""Fail closed on classification (issue 13 item 4).

A product column without a classification used to leave in clear under every purpose,
whatever it held. Now each product column must name its data category or say
`classification: none`; two policy files may not set conflicting values; and removing
or weakening a classification is a breaking contract change.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.observe.contracts import diff
from tidegate.project.models import ProductConfig

PRODUCT = "products/customer_profile.yml"
TREATMENTS = "policies/treatments.yml"
TENURE = "  tenure_days: {type: BIGINT, classification: none, description: Days since sign-up}"


def test_an_unclassified_product_column_fails_validate_with_a_suggestion(project) -> None:
    project.edit(
        PRODUCT,
        "  email: {type: VARCHAR, classification: user.contact.email}",
        "  email: {type: VARCHAR}",
    )
    problems = project.expect(
        PRODUCT,
        project.line(PRODUCT, "  email: {type: VARCHAR}"),
        "has no classification",
        field="columns.email",
    )
    message = next(p.message for p in problems if p.field == "columns.email")
    # the source column the SQL passes through is classified: that is the suggestion
    assert "classification: user.contact.email" in message
    assert "classification: none" in message
    assert "tidegate classify customer_profile" in message


def test_the_suggestion_falls_back_to_the_column_name(project) -> None:
    project.edit(PRODUCT, TENURE, "  tenure_days: {type: BIGINT}\n  phone: {type: VARCHAR}")
    sql = project.read("products/customer_profile.sql")
    project.write(
        "products/customer_profile.sql",
        sql.replace("AS tenure_days", "AS tenure_days, 'x' AS phone", 1),
    )
    problems = project.problems()
    by_field = {p.field: p for p in problems}
    assert set(by_field) == {"columns.tenure_days", "columns.phone"}, problems
    assert "user.contact.phone_number" in by_field["columns.phone"].message
    assert "from its name" in by_field["columns.phone"].message
    assert by_field["columns.tenure_days"].line == project.line(PRODUCT, "tenure_days:")
    assert "suggests one from its values" in by_field["columns.tenure_days"].message


def test_validate_exits_2_naming_file_line_and_field(project) -> None:
    project.edit(PRODUCT, TENURE, "  tenure_days: {type: BIGINT}")
    result = CliRunner().invoke(app, ["validate", str(project.root), "--json"])
    assert result.exit_code == 2, result.output
    problems = json.loads(result.stdout)["problems"]
    assert [(p["file"], p["line"], p["field"]) for p in problems] == [
        (PRODUCT, project.line(PRODUCT, "tenure_days:"), "columns.tenure_days")
    ]


def test_classify_still_loads_the_project_it_is_asked_to_fill_in(project) -> None:
    project.edit(PRODUCT, TENURE, "  tenure_days: {type: BIGINT}")
    result = CliRunner().invoke(
        app, ["classify", "customer_profile", "-p", str(project.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["existing"]["tenure_days"] is None


def test_two_policy_files_with_conflicting_default_treatments_name_both(project) -> None:
    project.write("policies/zz_extra.yml", "default_treatment: clear\n")
    problems = project.expect(
        "policies/zz_extra.yml", 1, "conflicts with 'drop'", field="default_treatment"
    )
    assert TREATMENTS in next(p.message for p in problems if p.field == "default_treatment")


def test_the_same_default_treatment_twice_is_no_conflict(project) -> None:
    project.write("policies/zz_extra.yml", "default_treatment: drop\n")
    project.load()


def test_a_treatment_defined_twice_names_the_first_file(project) -> None:
    project.write("policies/zz_extra.yml", 'treatments:\n  "*":\n    user.contact: clear\n')
    problems = project.expect(
        "policies/zz_extra.yml", 3, "defined twice", field="treatments.*.user.contact"
    )
    assert TREATMENTS in next(p.message for p in problems if "defined twice" in p.message)


def _contract(**columns: str | None) -> ProductConfig:
    return ProductConfig.model_validate(
        {
            "name": "p",
            "owner": "o",
            "key": "id",
            "sql": "SELECT 1",
            "purposes": ["support", "analytics"],
            "columns": {
                "id": {"type": "BIGINT", "classification": "user.unique_id"},
                **{
                    n: {"type": "VARCHAR", **({"classification": c} if c else {})}
                    for n, c in columns.items()
                },
            },
        }
    )


def test_removing_or_weakening_a_classification_is_breaking(project) -> None:
    policy = project.load().policy
    email = _contract(email="user.contact.email")
    for weaker in ("none", "user.contact.address.country", None):
        changes = diff(email, _contract(email=weaker), policy)
        found = [c for c in changes if c.subject == "email"]
        assert found, weaker
        assert all(c.breaking for c in found), (weaker, found)
        assert any("weakened" in c.kind or "removed" in c.kind for c in found), found
    # without a policy to judge by, dropping a classification is still breaking
    changes = diff(email, _contract(email="none"))
    assert [c.breaking for c in changes if c.subject == "email"] == [True]
    # tightening stays breaking; an unchanged classification is no change
    assert [c.breaking for c in diff(_contract(email="none"), email, policy)] == [True]
    assert diff(email, email, policy) == []
