"""The first egress into a real PostgreSQL: guard applied, audited, revocation removes rows."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of, consent_view_of

pytestmark = pytest.mark.services
ADA, GRACE = 1, 2  # the demo's fixed customers (see tidegate.demo.generator)


def _pg_sync(
    directory: Path,
    table: str,
    purpose: str = "marketing.email",
    product: str = "marketing_audience",
) -> None:
    (directory / "syncs" / "to_pg.yml").write_text(
        "name: to_pg\n"
        f"product: {product}\n"
        f"purpose: {purpose}\n"
        "destination: {type: postgres, dsn_env: TIDEGATE_TEST_PG_DSN, table: " + table + "}\n"
        "mode: upsert\n"
        "trigger: manual\n"
    )


def _rows(dsn: str, table: str) -> dict[int, dict[str, object]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        return {int(r["customer_id"]): r for r in cur.fetchall()}


def _allowed(platform: Platform) -> set[str]:
    consent_view_of(platform).refresh()
    return set(consent_view_of(platform).row_filter("marketing.email", "consent").subjects)


def test_sync_sends_only_consented_rows_and_removes_revoked(
    demo_copy: Path, pg_dsn: str, pg_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_TEST_PG_DSN", pg_dsn)
    _pg_sync(demo_copy, pg_table)
    with Platform.open(demo_copy) as platform:
        report = run_sync(platform, "to_pg")
        audience = platform.warehouse.arrow('SELECT * FROM products."marketing_audience"')
        allowed = _allowed(platform)
        expected = {
            r["customer_id"] for r in audience.to_pylist() if str(r["customer_id"]) in allowed
        }
        held = _rows(pg_dsn, pg_table)
        assert set(held) == expected
        assert report.added == len(expected)
        assert report.failed == 0
        assert ADA in held  # consented
        assert GRACE not in held  # revoked marketing email
        assert held[1]["email"] == "ada.lovelace1@example.com"

        # a second run with nothing changed sends nothing
        again = run_sync(platform, "to_pg")
        assert (again.added, again.changed, again.removed, again.unchanged) == (
            0,
            0,
            0,
            len(expected),
        )

        # Ada unsubscribes: the next run deletes her row from PostgreSQL, and says so
        consent_ledger_of(platform).record(
            [ConsentEvent("1", "marketing.email", "revoke", time.time(), "test")]
        )
        after = run_sync(platform, "to_pg")
        assert after.removed == 1
        assert ADA not in _rows(pg_dsn, pg_table)

        records = [r for _, r in platform.audit.records() if r.action == "sync"]
        assert len(records) == 3
        first = records[0]
        assert (first.principal, first.purpose, first.product) == (
            "sync:to_pg",
            "marketing.email",
            "marketing_audience",
        )
        assert first.rows == len(expected)
        assert first.columns["email"] == "clear"
        assert records[2].detail["removed"] == 1
        assert platform.audit.verify() == []


def test_sync_into_postgres_resends_everything_with_full(
    demo_copy: Path, pg_dsn: str, pg_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_TEST_PG_DSN", pg_dsn)
    _pg_sync(demo_copy, pg_table)
    with Platform.open(demo_copy) as platform:
        first = run_sync(platform, "to_pg")
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET email = 'tampered'").format(sql.Identifier(pg_table))
            )
        full = run_sync(platform, "to_pg", full=True)
        # every row resent; PostgreSQL held each one, so each is an update, not an insert
        assert (full.added, full.changed) == (0, first.added)
        assert all(r["email"] != "tampered" for r in _rows(pg_dsn, pg_table).values())


def test_postgres_table_source_snapshot(
    tmp_path: Path, pg_dsn: str, pg_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidegate.products.builder import build_products, load_sources
    from tidegate.project.scaffold import scaffold

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (customer_id BIGINT PRIMARY KEY, email TEXT, country TEXT,"
                " signed_up DATE)"
            ).format(sql.Identifier(pg_table))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (1, 'a@x.test', 'GB', '2024-01-01'),"
                " (2, 'b@x.test', 'FR', '2024-02-01')"
            ).format(sql.Identifier(pg_table))
        )
    project_dir = tmp_path / "p"
    scaffold(project_dir)
    source = project_dir / "sources" / "customers.yml"
    text = source.read_text().replace(
        "type: file\npath: data/customers.csv",
        f"type: postgres\ndsn_env: TIDEGATE_TEST_PG_DSN\ntable: {pg_table}",
    )
    source.write_text(text)
    monkeypatch.setenv("TIDEGATE_TEST_PG_DSN", pg_dsn)
    with Platform.open(project_dir) as platform:
        assert load_sources(platform) == {"customers": 2}
        (result,) = build_products(platform)
        assert result.status == "live"
        assert result.rows == 2
        rows = platform.warehouse.arrow(
            'SELECT customer_id, email FROM products."customer_profile"'
        )
        assert sorted(rows.to_pylist(), key=lambda r: r["customer_id"]) == [
            {"customer_id": 1, "email": "a@x.test"},
            {"customer_id": 2, "email": "b@x.test"},
        ]


def test_sync_columns_follow_the_policy_treatments(
    demo_copy: Path, pg_dsn: str, pg_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_TEST_PG_DSN", pg_dsn)
    _pg_sync(demo_copy, pg_table, product="customer_360")
    with Platform.open(demo_copy) as platform:
        run_sync(platform, "to_pg")
        source = platform.warehouse.arrow(
            'SELECT customer_id, postal_code FROM products."customer_360" WHERE customer_id = 1'
        ).to_pylist()[0]
    ada = _rows(pg_dsn, pg_table)[1]
    # marketing.email: names beyond the first, phone and birth date are dropped ...
    assert {"last_name", "phone", "birth_date"}.isdisjoint(ada)
    # ... the postal code is generalised to its first three characters, the email is clear
    assert ada["postal_code"] == source["postal_code"][:3] != source["postal_code"]
    assert ada["email"] == "ada.lovelace1@example.com"
    assert ada["first_name"] == "Ada"
