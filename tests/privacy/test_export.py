"""Anonymised exports: k-anonymity holds for any data and k; the export goes through the
guard (only subjects with a legal basis) and the audit, and reports information loss."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tidegate.cli.app import app
from tidegate.egress.export import export
from tidegate.errors import BadRequestError, ForbiddenError
from tidegate.platform import Platform
from tidegate.privacy.anonymize import anonymize
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of, consent_view_of

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "age": st.one_of(st.none(), st.integers(0, 100)),
            "zip": st.text("ABC123", min_size=0, max_size=6),
            "born": st.dates(dt.date(1940, 1, 1), dt.date(2010, 12, 31)),
            "tier": st.sampled_from(["free", "pro", "gold"]),
            "amount": st.floats(0, 1e6, allow_nan=False),
        }
    ),
    max_size=120,
)


@settings(max_examples=120, deadline=None)
@given(
    rows=rows_strategy,
    k=st.integers(2, 12),
    qis=st.lists(
        st.sampled_from(["age", "zip", "born", "tier", "amount"]), min_size=1, unique=True
    ),
    budget=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_every_equivalence_class_has_at_least_k_rows(
    rows: list[dict[str, Any]], k: int, qis: list[str], budget: float
) -> None:
    result = anonymize(rows, qis, k, budget)
    classes = Counter(tuple(r[q] for q in qis) for r in result.rows)
    assert all(n >= k for n in classes.values())
    assert result.suppressed + len(result.rows) == len(rows)
    assert result.classes == len(classes)
    loss = result.loss_report(qis)
    assert loss["suppression_rate"] == round(result.suppressed / len(rows) if rows else 0.0, 6)
    assert set(loss["levels"]) == set(qis)
    # non-QI columns are untouched
    originals = [{c: o[c] for c in o if c not in qis} for o in rows]
    assert all({c: r[c] for c in r if c not in qis} in originals for r in result.rows)


def test_generalisation_is_preferred_to_suppression_within_the_budget() -> None:
    rows = [{"age": a, "zip": f"EC{a % 7}"} for a in range(20, 80)]
    result = anonymize(rows, ["age", "zip"], 5, max_suppression=0.0)
    assert result.suppressed == 0
    assert result.levels["age"] > 0 or result.levels["zip"] > 0
    assert result.steps  # the report says how it got there


def test_dates_climb_month_year_decade() -> None:
    rows = [{"born": dt.date(1980 + i % 10, 1 + i % 12, 1)} for i in range(40)]
    result = anonymize(rows, ["born"], 4, 0.0)
    assert result.labels["born"] in {"year", "decade"}
    assert {r["born"] for r in result.rows} <= {str(y) for y in range(1980, 1990)} | {"1980s"}


# ---------------------------------------------------------------- through the guard


@pytest.fixture
def shop_platform(demo_copy: Path) -> Any:
    with Platform.open(demo_copy) as platform:
        yield platform


def test_export_through_the_guard_exports_only_consented_subjects(
    shop_platform: Platform, tmp_path: Path
) -> None:
    platform = shop_platform
    consent_ledger_of(platform).record(
        [ConsentEvent("1", "analytics", "revoke", time.time(), "test")]
    )
    out = tmp_path / "c360.parquet"
    result = export(
        platform,
        "customer_360",
        purpose="analytics",
        k=5,
        quasi_identifiers=["birth_date", "postal_code", "country"],
        out=out,
    )
    table = pq.read_table(out)
    assert table.num_rows == result.loss["rows_out"] > 0
    assert "customer_id" not in table.column_names
    assert "email" not in table.column_names
    assert {"customer_id", "email"} <= set(result.dropped)
    qis = ["birth_date", "postal_code", "country"]
    classes = Counter(tuple(r[q] for q in qis) for r in table.to_pylist())
    assert min(classes.values()) >= 5
    # only subjects with analytics consent: the count matches the consent view
    view = consent_view_of(platform)
    view.refresh()
    allowed = view.row_filter("analytics", "consent").subjects
    assert "1" not in allowed
    with platform.warehouse.cursor() as db:
        in_product = {
            str(r[0])
            for r in db.execute("SELECT customer_id FROM products.customer_360").fetchall()
        }
    assert result.loss["rows_in"] == len(in_product & allowed)
    assert result.subjects == result.loss["rows_out"]  # one row per customer
    (seq, record) = list(platform.audit.records())[-1]
    assert seq == result.audit_seq
    assert (record.action, record.purpose, record.product) == (
        "export",
        "analytics",
        "customer_360",
    )
    assert record.rows == table.num_rows
    assert record.detail["information_loss"]["suppression_rate"] == result.loss["suppression_rate"]
    assert record.columns["postal_code"].startswith("generalize+k5:")


def test_export_refuses_what_the_guard_refuses(shop_platform: Platform, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    with pytest.raises(ForbiddenError):
        export(shop_platform, "customer_360", purpose="marketing.email", k=5,
               quasi_identifiers=["country"], out=out, roles=("analyst",))  # fmt: skip
    with pytest.raises(BadRequestError, match="not columns"):
        export(shop_platform, "customer_360", purpose="analytics", k=5,
               quasi_identifiers=["first_name"], out=out)  # fmt: skip
    assert not out.exists()


def test_cli_export_writes_csv_and_reports_loss(demo_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "audience.csv"
    result = CliRunner().invoke(
        app,
        ["export", "customer_360", "--purpose", "support", "--k", "3",
         "--quasi-identifiers", "birth_date,postal_code,city", "--format", "csv",
         "--out", str(out), "--role", "support_agent", "--principal", "ana",
         "--project", str(demo_copy)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "classes" in result.output
    assert "suppressed" in result.output
    assert out.read_text().splitlines()[0].count(",") >= 2
