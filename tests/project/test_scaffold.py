"""`tidegate init`: the landing zone validates as written, and its policy means what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.errors import ConfigError, TidegateError
from tidegate.project import Policy, load_project
from tidegate.project.models import TreatmentSpec
from tidegate.project.scaffold import scaffold


def test_scaffold_writes_a_project_that_loads_without_problems(tmp_path: Path) -> None:
    root = tmp_path / "x"
    written = scaffold(root, "sales")

    project = load_project(root)

    assert project.name == "x"
    assert project.config.description == "Data products of the sales domain."
    assert set(project.sources) == {"customers"}
    assert set(project.products) == {"customer_profile"}
    assert set(project.syncs) == {"profiles_to_crm"}
    assert set(project.policy.purposes) == {"support", "marketing.email", "analytics"}
    assert set(project.policy.roles) == {"support_agent", "marketer", "analyst"}
    profile = project.products["customer_profile"]
    assert profile.depends_on == {"customers"}
    assert profile.sql_path == "products/customer_profile.sql"
    assert list(profile.columns) == ["customer_id", "email", "country", "tenure_days"]
    assert project.build_order() == ["customer_profile"]
    assert project.freshness_seconds("customer_profile") == 86400
    # every written file exists, and every file on disk was reported as written
    on_disk = {p for p in root.rglob("*") if p.is_file()}
    assert set(written) == on_disk
    assert (root / ".gitignore").is_file()
    assert not (root / "gitignore").exists()


def test_scaffold_substitutes_project_and_domain_names(tmp_path: Path) -> None:
    root = tmp_path / "My Shop-2"
    written = scaffold(root, "Sales Ops")

    for path in written:
        text = path.read_text(encoding="utf-8")
        assert "{{" not in text, f"unsubstituted placeholder in {path}"
    project = load_project(root)
    assert project.name == "my_shop_2"
    assert project.sources["customers"].config.owner == "sales_ops-team"
    assert project.products["customer_profile"].config.owner == "sales_ops-team"
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# my_shop_2: the sales_ops domain's tidegate project")


def test_scaffold_without_domain_uses_the_project_name(tmp_path: Path) -> None:
    scaffold(tmp_path / "billing")
    project = load_project(tmp_path / "billing")
    assert project.products["customer_profile"].config.owner == "billing-team"


def test_scaffold_slugs_a_folder_name_that_does_not_start_with_a_letter(tmp_path: Path) -> None:
    scaffold(tmp_path / "2024 data", "sales")
    assert load_project(tmp_path / "2024 data").name == "p_2024_data"


def test_scaffold_into_an_existing_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    scaffold(root, "sales")
    assert load_project(root).name == "empty"


def test_scaffold_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "busy"
    root.mkdir()
    (root / "notes.txt").write_text("mine", encoding="utf-8")

    with pytest.raises(TidegateError, match="not empty"):
        scaffold(root, "sales")

    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert (root / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_scaffold_refuses_to_overwrite_a_project(tmp_path: Path) -> None:
    root = tmp_path / "x"
    scaffold(root, "sales")
    (root / "tidegate.yml").write_text("name: edited\n", encoding="utf-8")

    with pytest.raises(TidegateError):
        scaffold(root, "other")

    assert (root / "tidegate.yml").read_text(encoding="utf-8") == "name: edited\n"


def test_a_folder_without_tidegate_yml_is_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a project") as info:
        load_project(tmp_path)
    (problem,) = info.value.problems
    assert problem.file.endswith("tidegate.yml")


# ---------------------------------------------------------------- treatments


@pytest.fixture
def landing_zone_policy(tmp_path: Path) -> Policy:
    scaffold(tmp_path / "x", "sales")
    return load_project(tmp_path / "x").policy


@pytest.mark.parametrize(
    ("purpose", "classification", "expected"),
    [
        # the purpose's own rule beats the '*' rule (user.contact: drop)
        ("support", "user.contact.email", "clear"),
        ("analytics", "user.unique_id", "hash"),
        # the purpose's longest matching prefix (user.contact.address); '*' is not consulted
        ("marketing.email", "user.contact.address.country", "generalize"),
        ("marketing.email", "user.contact.email", "clear"),
        # the purpose's exact rule beats '*' user.contact (drop)
        ("analytics", "user.contact.address.country", "clear"),
        # the purpose has no matching rule: fall back to '*'
        ("marketing.email", "user.unique_id", "clear"),
        ("marketing.email", "user.contact.phone", "drop"),
        ("no_such_purpose", "user.unique_id", "clear"),
        # unclassified columns are shown as they are
        ("support", None, "clear"),
    ],
)
def test_landing_zone_treatments(
    landing_zone_policy: Policy, purpose: str, classification: str | None, expected: str
) -> None:
    assert landing_zone_policy.treatment_for(purpose, classification).treatment == expected


def _policy(treatments: dict[str, dict[str, str]], default: str = "drop") -> Policy:
    return Policy(
        treatments={
            scope: {prefix: TreatmentSpec(treatment=kind) for prefix, kind in rules.items()}
            for scope, rules in treatments.items()
        },
        default_treatment=TreatmentSpec(treatment=default),
    )


def test_longest_prefix_wins_regardless_of_rule_order() -> None:
    for rules in (
        {"user": "mask", "user.contact": "hash", "user.contact.email": "clear"},
        {"user.contact.email": "clear", "user.contact": "hash", "user": "mask"},
    ):
        policy = _policy({"support": rules})
        assert policy.treatment_for("support", "user.contact.email").treatment == "clear"
        assert policy.treatment_for("support", "user.contact.email.work").treatment == "clear"
        assert policy.treatment_for("support", "user.contact.phone").treatment == "hash"
        assert policy.treatment_for("support", "user.name").treatment == "mask"


def test_prefixes_match_whole_segments_only() -> None:
    policy = _policy({"*": {"user.contact": "clear"}}, default="mask")
    assert policy.treatment_for("x", "user.contact").treatment == "clear"
    assert policy.treatment_for("x", "user.contact.email").treatment == "clear"
    # 'user.contacts' is not under 'user.contact'; nor is 'user' itself
    assert policy.treatment_for("x", "user.contacts").treatment == "mask"
    assert policy.treatment_for("x", "user").treatment == "mask"


def test_purpose_rules_beat_star_even_with_a_longer_star_prefix() -> None:
    policy = _policy({"*": {"user.contact.email": "clear"}, "support": {"user": "hash"}})
    assert policy.treatment_for("support", "user.contact.email").treatment == "hash"
    assert policy.treatment_for("analytics", "user.contact.email").treatment == "clear"


def test_unmatched_classified_columns_get_the_default_treatment() -> None:
    assert _policy({}, default="mask").treatment_for("support", "user.x").treatment == "mask"
    assert Policy().treatment_for("support", "user.x").treatment == "drop"


def test_unclassified_columns_are_clear_unless_a_rule_names_them() -> None:
    assert _policy({}, default="drop").treatment_for("support", None).treatment == "clear"
    policy = _policy({"*": {"unclassified": "hash"}})
    assert policy.treatment_for("support", None).treatment == "hash"
