"""The demo shop generator and the demo project.

The tour and the docs name concrete rows (customers 1 and 2), so these tests pin the
generator's promises: determinism, referential integrity, time bounds, the fixed
consent histories; and that the demo project's SQL runs on the generated data with the
types its contracts declare. The platform's own build is tested elsewhere; here the
SQL runs in plain DuckDB.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from tidegate.demo import project_template
from tidegate.demo.generator import MINIMUM, SMALL, ShopSize, generate_shop
from tidegate.project import Project, load_project

ANCHOR = datetime(2025, 6, 1, tzinfo=UTC)
TABLES = ("customers", "orders", "web_events", "tickets", "consent_events")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, seed=7, size=SMALL, anchor=ANCHOR)
    return out


def read(folder: Path, table: str) -> pa.Table:
    return pq.read_table(folder / f"{table}.parquet")


def micros(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000


def as_micros(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.int64()).to_numpy()


# ---------------------------------------------------------------- determinism and shape


def test_same_seed_and_anchor_give_identical_files(shop: Path, tmp_path: Path) -> None:
    counts = generate_shop(tmp_path, seed=7, size=SMALL, anchor=ANCHOR)
    assert set(counts) == set(TABLES)
    for table in TABLES:
        assert read(tmp_path, table).equals(read(shop, table)), table
        assert (tmp_path / f"{table}.parquet").read_bytes() == (
            shop / f"{table}.parquet"
        ).read_bytes(), table


def test_a_different_seed_gives_different_data(shop: Path, tmp_path: Path) -> None:
    generate_shop(tmp_path, seed=8, size=SMALL, anchor=ANCHOR)
    for table in ("customers", "orders", "web_events", "tickets"):
        assert not read(tmp_path, table).equals(read(shop, table)), table


def test_row_counts_match_the_size_and_progress_reaches_every_total(tmp_path: Path) -> None:
    size = ShopSize(customers=50, orders=400, web_events=450_000, tickets=80)
    calls: list[tuple[str, int, int]] = []
    counts = generate_shop(
        tmp_path, size=size, anchor=ANCHOR, progress=lambda *call: calls.append(call)
    )
    expected = {"customers": 50, "orders": 400, "web_events": 450_000, "tickets": 80}
    assert {k: counts[k] for k in expected} == expected
    for table in TABLES:
        assert read(tmp_path, table).num_rows == counts[table]
        assert (table, counts[table], counts[table]) in calls
    web = [done for name, done, _ in calls if name == "web_events"]
    assert web == [200_000, 400_000, 450_000]  # written, and reported, in chunks
    ids = read(tmp_path, "web_events")["event_id"].to_numpy()
    assert (ids == np.arange(1, 450_001)).all()
    assert not list(tmp_path.glob("*.tmp"))


def test_schemas(shop: Path) -> None:
    ts = pa.timestamp("us", tz="UTC")
    customers = read(shop, "customers").schema
    assert customers.field("customer_id").type == pa.int64()
    assert customers.field("birth_date").type == pa.date32()
    assert customers.field("signed_up_at").type == ts
    assert read(shop, "orders").schema.field("amount").type == pa.float64()
    assert read(shop, "orders").schema.field("ordered_at").type == ts
    assert read(shop, "web_events").schema.field("occurred_at").type == ts
    assert read(shop, "tickets").schema.field("satisfaction").type == pa.int8()
    assert read(shop, "consent_events").schema.field("subject").type == pa.string()
    assert read(shop, "consent_events").schema.field("occurred_at").type == ts


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_shop(tmp_path, size=MINIMUM, anchor=datetime(2025, 6, 1))
    with pytest.raises(ValueError, match="customers must be at least"):
        generate_shop(tmp_path, size=ShopSize(customers=2, orders=20, web_events=50, tickets=10))


def test_default_anchor_is_today_midnight_utc(tmp_path: Path) -> None:
    generate_shop(tmp_path, size=MINIMUM)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Customer 1 signs up at a fixed offset from the anchor.
    ada = as_micros(read(tmp_path, "customers")["signed_up_at"])[0]
    assert ada == micros(midnight - timedelta(days=720, seconds=-34_320))
    for table, column in (("orders", "ordered_at"), ("web_events", "occurred_at")):
        assert as_micros(read(tmp_path, table)[column]).max() <= micros(midnight)


# ---------------------------------------------------------------- contents


def test_referential_integrity(shop: Path) -> None:
    ids = read(shop, "customers")["customer_id"]
    assert ids.to_pylist() == list(range(1, SMALL.customers + 1))
    for table in ("orders", "tickets"):
        column = read(shop, table)["customer_id"]
        assert column.null_count == 0
        assert pc.all(pc.is_in(column, value_set=ids.combine_chunks())).as_py(), table
    web = read(shop, "web_events")["customer_id"].drop_null()
    assert pc.all(pc.is_in(web, value_set=ids.combine_chunks())).as_py()
    subjects = pc.cast(read(shop, "consent_events")["subject"], pa.int64())
    assert pc.all(pc.is_in(subjects, value_set=ids.combine_chunks())).as_py()


def test_timestamps_are_in_the_two_years_before_the_anchor(shop: Path) -> None:
    low, high = micros(ANCHOR - timedelta(days=730)), micros(ANCHOR)
    for table, column in (
        ("customers", "signed_up_at"),
        ("orders", "ordered_at"),
        ("web_events", "occurred_at"),
        ("tickets", "opened_at"),
        ("consent_events", "occurred_at"),
    ):
        values = as_micros(read(shop, table)[column])
        assert values.min() >= low, table
        assert values.max() <= high, table


def test_activity_follows_signup_and_leans_recent(shop: Path) -> None:
    signup = as_micros(read(shop, "customers")["signed_up_at"])
    orders = read(shop, "orders")
    ordered_at = as_micros(orders["ordered_at"])
    assert (ordered_at > signup[orders["customer_id"].to_numpy() - 1]).all()
    consent = read(shop, "consent_events")
    subject = pc.cast(consent["subject"], pa.int64()).to_numpy()
    assert (as_micros(consent["occurred_at"]) > signup[subject - 1]).all()
    events = read(shop, "web_events")
    occurred = as_micros(events["occurred_at"])
    assert (occurred >= micros(ANCHOR - timedelta(days=90))).mean() > 0.5


def test_distributions_are_roughly_as_described(shop: Path) -> None:
    orders = read(shop, "orders")
    buyers = len(set(orders["customer_id"].to_pylist()))
    assert 0.80 <= buyers / SMALL.customers <= 0.97  # about one in ten never orders
    amount = orders["amount"].to_numpy()
    assert amount.min() >= 5
    assert amount.max() <= 500
    assert (np.round(amount, 2) == amount).all()
    assert set(orders["status"].to_pylist()) == {"paid", "refunded", "cancelled"}
    events = read(shop, "web_events")
    anonymous = events["customer_id"].null_count / events.num_rows
    assert 0.10 <= anonymous <= 0.20
    assert set(events["event_type"].to_pylist()) == {
        "page_view",
        "product_view",
        "add_to_cart",
        "checkout",
    }
    ip = events["ip_address"].to_pylist()
    assert all(a.startswith(("192.0.2.", "198.51.100.", "203.0.113.")) for a in ip)
    tickets = read(shop, "tickets")
    is_open = pc.equal(tickets["status"], "open")
    assert pc.all(pc.is_null(tickets["satisfaction"].filter(is_open))).as_py()
    closed = tickets["satisfaction"].filter(pc.invert(is_open)).to_numpy()
    assert closed.min() >= 1
    assert closed.max() <= 5


def test_emails_are_unique_and_fake(shop: Path) -> None:
    customers = read(shop, "customers")
    emails = customers["email"].to_pylist()
    assert len(set(emails)) == len(emails)
    domains = {"example.com", "example.org", "example.net", "mail.example", "inbox.example"}
    assert {e.split("@")[1] for e in emails} <= domains
    phones = customers["phone"].to_pylist()
    assert all(p.startswith(("+44 7700 900", "+33 6 39 98 ")) or " 555 01" in p for p in phones)
    assert len(set(customers["country"].to_pylist())) == 8


def test_consent_histories_of_customers_1_and_2(shop: Path) -> None:
    rows = read(shop, "consent_events").to_pylist()
    history = {
        who: [(r["purpose"], r["action"]) for r in rows if r["subject"] == who]
        for who in ("1", "2")
    }
    assert sorted(history["1"]) == [("analytics", "grant"), ("marketing.email", "grant")]
    assert [h for h in history["2"] if h[0] == "marketing.email"] == [
        ("marketing.email", "grant"),
        ("marketing.email", "revoke"),
    ]
    assert [h for h in history["2"] if h[0] == "analytics"] == [("analytics", "grant")]
    customers = read(shop, "customers").to_pylist()
    assert customers[0]["email"] == "ada.lovelace1@example.com"
    assert customers[1]["email"] == "grace.hopper2@example.com"


def test_consent_ledger_is_well_formed(shop: Path) -> None:
    rows = read(shop, "consent_events").to_pylist()
    assert {r["purpose"] for r in rows} == {"marketing.email", "analytics"}  # no support
    assert {r["source"] for r in rows} <= {"signup_form", "preference_center", "cookie_banner"}
    assert [r["occurred_at"] for r in rows] == sorted(r["occurred_at"] for r in rows)
    per_choice: dict[tuple[str, str], list[dict[str, object]]] = {}
    for row in rows:
        per_choice.setdefault((row["subject"], row["purpose"]), []).append(row)
    for choice in per_choice.values():
        assert [r["action"] for r in choice] in (["grant"], ["grant", "revoke"])
    granted = len(per_choice) / (2 * SMALL.customers)
    revoked = sum(len(c) == 2 for c in per_choice.values()) / len(per_choice)
    assert 0.5 <= granted <= 0.7
    assert 0.1 <= revoked <= 0.3


def test_customers_1_and_2_have_orders_tickets_and_web_events(shop: Path) -> None:
    for table in ("orders", "tickets", "web_events"):
        owners = read(shop, table)["customer_id"].to_pylist()
        assert owners.count(1) >= 2, table
        assert owners.count(2) >= 1, table


# ---------------------------------------------------------------- the demo project


@pytest.fixture(scope="module")
def demo_project(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("demo") / "shop"
    with resources.as_file(project_template()) as template:
        shutil.copytree(template, root)
    shutil.copytree(shop, root / "data")
    return load_project(root)


@pytest.fixture(scope="module")
def built(demo_project: Project) -> duckdb.DuckDBPyConnection:
    """Every product built as a table, in build order, over views of the Parquet files."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Pacific/Auckland'")  # results must not depend on it
    for name, source in demo_project.sources.items():
        path = demo_project.path(source.config.path)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    for name in demo_project.build_order():
        con.execute(f"CREATE TABLE {name} AS {demo_project.products[name].sql}")
    return con


def test_demo_project_loads_cleanly(demo_project: Project) -> None:
    assert demo_project.name == "shop"
    assert set(demo_project.sources) == {"customers", "orders", "web_events", "tickets"}
    assert demo_project.build_order() == ["customer_360", "churn_risk", "marketing_audience"]
    assert set(demo_project.policy.purposes) == {"support", "marketing.email", "analytics"}
    assert demo_project.policy.purposes["support"].legal_basis == "contract"
    assert set(demo_project.syncs) == {"crm_audience"}
    for name, source in demo_project.sources.items():
        assert source.config.path == f"data/{name}.parquet"
        assert demo_project.path(source.config.path).is_file()


def test_treatments_read_as_intended(demo_project: Project) -> None:
    policy = demo_project.policy

    def kind(purpose: str, classification: str | None) -> str:
        return policy.treatment_for(purpose, classification).treatment

    assert kind("support", "user.contact.phone_number") == "clear"
    assert kind("support", "user.device.ip_address") == "drop"
    assert kind("support", "user.demographic.date_of_birth") == "generalize"
    assert kind("marketing.email", "user.contact.email") == "clear"
    assert kind("marketing.email", "user.name.last") == "drop"
    assert kind("marketing.email", "user.contact.address.postal_code") == "generalize"
    assert kind("analytics", "user.unique_id") == "hash"
    assert kind("analytics", "user.name.first") == "drop"
    assert kind("analytics", "user.contact.address.city") == "clear"
    assert kind("marketing.email", None) == "clear"


def test_every_product_returns_its_declared_types(
    demo_project: Project, built: duckdb.DuckDBPyConnection
) -> None:
    for name, product in demo_project.products.items():
        actual = dict(
            built.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position",
                [name],
            ).fetchall()
        )
        assert list(actual) == list(product.columns), name
        for column, spec in product.columns.items():
            declared = exp.DataType.build(spec.type, dialect="duckdb")
            returned = exp.DataType.build(actual[column], dialect="duckdb")
            assert declared.this == returned.this, f"{name}.{column}: {spec.type} vs {actual}"


def test_customer_360_has_one_row_per_customer(built: duckdb.DuckDBPyConnection) -> None:
    rows, distinct = built.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM customer_360"
    ).fetchone() or (0, 0)
    assert rows == distinct == SMALL.customers
    ada = built.execute(
        "SELECT order_count, lifetime_value, web_event_count, open_tickets "
        "FROM customer_360 WHERE customer_id = 1"
    ).fetchone()
    assert ada == (6, 697.65, 7, 0)
    missing = built.execute(
        "SELECT count(*) FROM customer_360 WHERE order_count = 0 AND lifetime_value <> 0"
    ).fetchone()
    assert missing == (0,)


def test_churn_risk_and_audience_for_the_tour(built: duckdb.DuckDBPyConnection) -> None:
    bands = dict(
        built.execute(
            "SELECT customer_id, risk_band FROM churn_risk WHERE customer_id IN (1, 2)"
        ).fetchall()
    )
    assert bands == {1: "high", 2: "medium"}
    counts = dict(built.execute("SELECT risk_band, count(*) FROM churn_risk GROUP BY 1").fetchall())
    assert set(counts) == {"low", "medium", "high"}
    scores = built.execute("SELECT min(churn_score), max(churn_score) FROM churn_risk").fetchone()
    assert scores is not None
    assert 0 <= scores[0] <= scores[1] <= 100
    audience = {
        row[0] for row in built.execute("SELECT customer_id FROM marketing_audience").fetchall()
    }
    assert {1, 2} <= audience
    assert 0 < len(audience) < SMALL.customers
