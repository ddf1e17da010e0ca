"""The taxonomy check in `validate`, and `classify` suggestions from names and values."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tidegate.errors import ConfigError
from tidegate.privacy.classify import iban_ok, is_card, luhn_ok, suggest
from tidegate.project import load_project
from tidegate.project.taxonomy import DATA_CATEGORIES, DATA_USES, check_taxonomy, judge

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
TODAY = dt.date(2026, 11, 1)

SOURCE_YML = """\
name: people
type: file
path: data/people.csv
key: person_id
subject: person_id
columns:
  person_id: {type: BIGINT}
  contact:
    type: VARCHAR
  phone_no: {type: VARCHAR}
  client_ip: {type: VARCHAR}
  pan: {type: VARCHAR}
  iban: {type: VARCHAR}
  dob: {type: DATE}
  zip: {type: VARCHAR}
  first_name: {type: VARCHAR}
  amount: {type: DOUBLE}
  {extra}
"""

POLICY_YML = """\
purposes:
  support:
    legal_basis: contract
    data_uses: [{use}]
roles:
  agent: {{purposes: [support]}}
treatments:
  "*":
    user: drop
"""

CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004"]
IBANS = ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"]


def write_project(root: Path, extra: str = "", use: str = "essential.service") -> None:
    (root / "sources").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "data").mkdir()
    (root / "tidegate.yml").write_text("name: people_project\n")
    (root / "sources" / "people.yml").write_text(SOURCE_YML.replace("{extra}", extra))
    (root / "policies" / "p.yml").write_text(POLICY_YML.format(use=use))
    with (root / "data" / "people.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["person_id", "contact", "phone_no", "client_ip", "pan", "iban", "dob", "zip",
             "first_name", "amount"]
        )  # fmt: skip
        for i in range(40):
            out.writerow(
                [
                    i,
                    f"person{i}@example.org",
                    f"+44 20 7946 {i:04d}",
                    f"10.0.{i}.7" if i % 2 else f"2001:db8::{i:x}",
                    CARDS[i % 4],
                    IBANS[i % 3],
                    f"{1950 + i}-0{1 + i % 9}-1{i % 9}",
                    f"{10000 + i * 37}",
                    ["Ada", "Grace", "Alan", "Margaret"][i % 4],
                    i * 1.5,
                ]
            )


# ------------------------------------------------------------------ taxonomy


def test_taxonomy_keys_are_fideslang_shaped() -> None:
    for table in (DATA_CATEGORIES, DATA_USES):
        for key in table:
            parent = key.rsplit(".", 1)[0]
            assert "." not in key or parent in table, f"{key} has no parent"
    assert judge("user.contact.email", DATA_CATEGORIES, "c") is None
    warning = judge("user.contact.emial", DATA_CATEGORIES, "c")
    assert warning is not None
    assert warning[0] == "warning"
    assert "did you mean user.contact.email" in warning[1]
    error = judge("usr.email", DATA_CATEGORIES, "c")
    assert error is not None
    assert error[0] == "error"


def test_validate_errors_on_unknown_roots_with_file_and_line(tmp_path: Path) -> None:
    write_project(tmp_path, extra="nick: {type: VARCHAR, classification: person.nickname}",
                  use="advertizing")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    problems = {(p.file, p.line, p.field): p.message for p in info.value.problems}
    assert ("sources/people.yml", 18, "columns.nick.classification") in problems
    assert ("policies/p.yml", 4, "purposes.support.data_uses.0") in problems
    assert (
        "'advertizing' is not in the taxonomy"
        in problems[("policies/p.yml", 4, "purposes.support.data_uses.0")]
    )


def test_extensions_are_warnings_shown_by_validate(tmp_path: Path) -> None:
    write_project(tmp_path, extra="nick: {type: VARCHAR, classification: user.name.nick}")
    project = load_project(tmp_path)
    errors, warnings = check_taxonomy(project)
    assert errors == []
    assert [w.field for w in warnings] == ["columns.nick.classification"]
    shown = subprocess.run(
        [TIDEGATE, "validate", str(tmp_path), "--json"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "sub-category of 'user.name'" in json.loads(shown.stdout)["warnings"][0]["message"]


# ------------------------------------------------------------------ detectors


def test_checksums() -> None:
    assert all(is_card(c) for c in CARDS)
    assert not is_card("4111 1111 1111 1112")  # Luhn fails
    assert luhn_ok("79927398713")
    assert all(iban_ok(i) for i in IBANS)
    assert not iban_ok("DE89 3704 0044 0532 0130 01")  # mod-97 fails


def test_values_decide_even_under_a_misleading_name() -> None:
    found = suggest("misc", [f"u{i}@example.com" for i in range(10)], TODAY)
    assert found is not None
    assert found.classification == "user.contact.email"
    assert found.confidence >= 0.9
    assert suggest("order_total", [1.5, 2.0, 3.25], TODAY) is None
    # 5-digit numbers are not postal codes unless the name says so
    assert suggest("quantity", ["10001", "10002"], TODAY) is None
    only_name = suggest("email", [], TODAY)
    assert only_name is not None
    assert only_name.confidence == 0.6


def test_classify_a_source_from_the_command_line_and_write(tmp_path: Path) -> None:
    write_project(tmp_path)
    from tidegate.platform import Platform
    from tidegate.products.builder import load_sources

    with Platform.open(tmp_path) as platform:
        load_sources(platform)
    result = subprocess.run(
        [TIDEGATE, "classify", "people", "-p", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = {s["column"]: s for s in json.loads(result.stdout)["suggestions"]}
    assert {c: s["classification"] for c, s in found.items()} == {
        "person_id": "user.unique_id",
        "contact": "user.contact.email",
        "phone_no": "user.contact.phone_number",
        "client_ip": "user.device.ip_address",
        "pan": "user.financial.credit_card",
        "iban": "user.financial.bank_account",
        "dob": "user.demographic.date_of_birth",
        "zip": "user.contact.address.postal_code",
        "first_name": "user.name.first",
    }
    assert found["contact"]["confidence"] >= 0.9
    assert found["person_id"]["confidence"] == 0.6  # from its name only

    written = subprocess.run(
        [TIDEGATE, "classify", "people", "-p", str(tmp_path), "--write"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert "classification: user.contact.email  #" in written.stdout
    project = load_project(tmp_path)
    columns = project.sources["people"].columns
    assert columns["contact"].classification == "user.contact.email"
    assert columns["pan"].classification == "user.financial.credit_card"
    assert columns["amount"].classification is None
