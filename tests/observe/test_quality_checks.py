"""Every kind of check, run on real rows in DuckDB, with the failing rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.errors import ConfigError
from tidegate.meta.sqlite import sqlite_part
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.project import load_project

PROFILE_CHECKS = """
checks:
  - {type: not_null, column: email, severity: warn}
  - {type: unique, column: email, severity: warn}
  - {type: unique, name: email_country_unique, columns: [email, country], severity: warn}
  - {type: accepted_values, column: country, values: [GB, US, FI], severity: warn}
  - {type: range, column: customer_id, min: 1, max: 4, severity: warn}
  - {type: regex, column: email, pattern: '^[^@]+@[^@]+[.][a-z]+$', severity: warn}
  - {type: length, column: country, min: 2, max: 2, severity: warn}
  - {type: row_count, min: 10, severity: warn}
  - {type: row_count, name: not_empty, min: 1}
  - {type: relationship, column: customer_id, to: customers, severity: warn}
  - {type: relationship, name: all_vip, column: customer_id, to: vip, severity: warn}
  - {type: distribution, column: customer_id, metric: mean, min: 2, max: 4}
  - {type: distribution, column: email, metric: null_percent, max: 10, severity: warn}
  - {type: sql, name: no_negative_tenure, sql: "SELECT * FROM this WHERE tenure_days < 0"}
  - type: sql
    name: no_xx
    severity: warn
    sql: >-
      SELECT p.* FROM customer_profile p JOIN customers c USING (customer_id)
      WHERE c.country = 'XX'

"""

VIP = """name: vip
owner: shop-team
key: customer_id
purposes: [analytics]
sql: |
  SELECT customer_id, now() AS checked_at, TIMESTAMP '2020-01-01' AS old_at
  FROM customer_profile WHERE customer_id <= 2
columns:
  customer_id:
    type: BIGINT
    classification: user.unique_id
    checks: [not_null, unique, {relationship: customer_profile.customer_id}]
  checked_at: {type: TIMESTAMPTZ, classification: none, checks: [{freshness: 1h}]}
  old_at: {type: TIMESTAMP, classification: none, checks: [{freshness: 1d, severity: warn}]}
"""

EXPECTED = {
    # name: (passed, failing rows or None for aggregate checks)
    "email__not_null": (False, 1),
    "email__unique": (False, 2),
    "email_country_unique": (True, 0),
    "country__accepted_values": (False, 1),
    "customer_id__range": (False, 1),
    "email__regex": (False, 1),
    "country__length": (True, 0),
    "row_count": (False, None),
    "not_empty": (True, None),
    "customer_id__relationship": (True, 0),
    "all_vip": (False, None),  # vip is built after customer_profile: not there yet
    "customer_id__distribution__mean": (True, None),
    "email__distribution__null_percent": (False, None),
    "no_negative_tenure": (True, 0),
    "no_xx": (False, 1),
}


def _write_checks(project: Path) -> None:
    path = project / "products" / "customer_profile.yml"
    path.write_text(path.read_text() + PROFILE_CHECKS)
    (project / "products" / "vip.yml").write_text(VIP)


def test_every_check_kind_on_real_rows(small_project: Path) -> None:
    _write_checks(small_project)
    with Platform.open(small_project) as platform:
        load_sources(platform)
        results = {r.product: r for r in build_products(platform)}
        assert results["customer_profile"].status == "live"  # only warn checks failed
        assert results["vip"].status == "live"
        with sqlite_part(small_project / ".tidegate" / "metadata.db", "observations") as store:
            found = {r["check_name"]: r for r in store.quality("customer_profile")}
            vip = {r["check_name"]: r for r in store.quality("vip")}
        got = {n: (bool(r["passed"]), r["failing_rows"]) for n, r in found.items()}
        assert got == EXPECTED
        assert found["row_count"]["observed"] == 5
        assert found["email__distribution__null_percent"]["observed"] == pytest.approx(20.0)
        assert [n for n, r in found.items() if r["error"]] == ["all_vip"]
        assert "vip" in found["all_vip"]["error"]
        assert {n: bool(r["passed"]) for n, r in vip.items()} == {
            "customer_id__not_null": True,
            "customer_id__unique": True,
            "customer_id__relationship": True,
            "checked_at__freshness": True,
            "old_at__freshness": False,
        }
        # failing rows are kept for inspection, named after product, version and check
        table = found["email__unique"]["table_name"]
        assert table == 'quality."customer_profile__v1__email__unique"'
        rows = platform.warehouse.arrow(f"SELECT customer_id FROM {table} ORDER BY 1")
        assert rows.column("customer_id").to_pylist() == [4, 5]
        assert found["email__not_null"]["table_name"] is not None
        assert found["email_country_unique"]["table_name"] is None
        # the second build finds vip built: customers 3, 4 and 5 are not in it
        (second,) = build_products(platform, only=["customer_profile"])[:1]
        assert second.status == "live"
        with sqlite_part(small_project / ".tidegate" / "metadata.db", "observations") as store:
            again = {r["check_name"]: r for r in store.quality("customer_profile", 2)}
        assert (again["all_vip"]["passed"], again["all_vip"]["failing_rows"]) == (0, 3)


def test_a_check_on_an_undeclared_column_is_a_config_error(small_project: Path) -> None:
    path = small_project / "products" / "customer_profile.yml"
    path.write_text(path.read_text() + "checks:\n  - {type: not_null, column: nope}\n")
    with pytest.raises(ConfigError, match="'nope', not a declared column"):
        load_project(small_project)


def test_a_malformed_column_check_names_file_and_line(small_project: Path) -> None:
    path = small_project / "products" / "customer_profile.yml"
    text = path.read_text().replace(
        "country: {type: VARCHAR,", "country: {checks: [{between: 1}], type: VARCHAR,"
    )
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"customer_profile.yml:\d+.*exactly one of"):
        load_project(small_project)
