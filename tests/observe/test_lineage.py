"""Column lineage of the demo products against a hand-written expectation."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.observe.lineage import build_graph, product_lineage
from tidegate.project import load_project

DEMO = Path(__file__).resolve().parents[2] / "src" / "tidegate" / "demo" / "project"
C360_JOINS = {
    ("customers", "customer_id"): {"join"},
    ("orders", "customer_id"): {"join"},
    ("web_events", "customer_id"): {"join"},
    ("tickets", "customer_id"): {"join"},
}


def test_customer_360() -> None:
    project = load_project(DEMO)
    found = product_lineage(project.products["customer_360"], project)
    assert found.direct["email"] == {("customers", "email")}
    assert found.direct["lifetime_value"] == {("orders", "amount"), ("orders", "status")}
    assert found.direct["last_activity_at"] == {
        ("orders", "ordered_at"),
        ("web_events", "occurred_at"),
        ("tickets", "opened_at"),
    }
    assert found.direct["order_count"] == set()  # count(*): rows, not a column
    assert found.direct["open_tickets"] == {("tickets", "status")}  # FILTER (WHERE status …)
    # every column depends on the LEFT JOINs' keys; profile columns on nothing else
    assert found.indirect["email"] == C360_JOINS
    # web_event_count: the WHERE customer_id IS NOT NULL and GROUP BY of its CTE
    assert found.indirect["web_event_count"] == C360_JOINS | {
        ("web_events", "customer_id"): {"join", "filter", "group_by"}
    }
    assert found.indirect["order_count"] == C360_JOINS | {
        ("orders", "customer_id"): {"join", "group_by"}
    }


def test_churn_risk_filter_only_dependency() -> None:
    project = load_project(DEMO)
    found = product_lineage(project.products["churn_risk"], project)
    assert found.direct["churn_score"] == {
        ("customer_360", "last_activity_at"),
        ("customer_360", "signed_up_at"),
        ("customer_360", "order_count"),
    }
    # tickets.satisfaction appears only in a WHERE, yet decides the complaint points
    assert found.indirect["churn_score"][("tickets", "satisfaction")] == {"filter"}
    assert found.indirect["low_satisfaction_tickets"] == {
        ("customer_360", "customer_id"): {"join"},
        ("tickets", "customer_id"): {"join", "group_by"},
        ("tickets", "satisfaction"): {"filter"},
    }
    # days_inactive does not pass through the complaints CTE's filter
    assert ("tickets", "satisfaction") not in found.indirect["days_inactive"]


def test_marketing_audience() -> None:
    project = load_project(DEMO)
    found = product_lineage(project.products["marketing_audience"], project)
    assert found.direct == {
        "customer_id": {("customer_360", "customer_id")},
        "email": {("customer_360", "email")},
        "first_name": {("customer_360", "first_name")},
        "country": {("customer_360", "country")},
        "risk_band": {("churn_risk", "risk_band")},
        "lifetime_value": {("customer_360", "lifetime_value")},
    }
    expected = {
        ("customer_360", "customer_id"): {"join"},
        ("churn_risk", "customer_id"): {"join"},
        ("churn_risk", "risk_band"): {"filter"},
        ("customer_360", "lifetime_value"): {"filter"},
        ("customer_360", "email"): {"filter"},
    }
    assert all(found.indirect[c] == expected for c in found.direct)


def test_graph_reaches_syncs_and_the_api() -> None:
    graph = build_graph(load_project(DEMO))
    up = graph.walk("sync:crm_audience.segment", "up")
    assert up["sync:crm_audience.segment"] == {"marketing_audience.risk_band": {"sync"}}
    assert "churn_risk.risk_band" in up["marketing_audience.risk_band"]
    # a source column reaches the CRM through two products
    down = graph.walk("customers.email", "down")
    assert "sync:crm_audience.email_address" in down
    assert "api:customer_360.email" in down
    label = graph.labels["sync:crm_audience.email_address"]
    assert label == "sqlite:crm.db/audience.email_address"


def test_cli_text_mermaid_and_dot() -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["lineage", "marketing_audience.email", "-p", str(DEMO)])
    assert text.exit_code == 0, text.output
    assert "customers.email" in text.output
    assert "crm.db/audience.email_address" in text.output
    mermaid = runner.invoke(app, ["lineage", "churn_risk", "-p", str(DEMO), "--format", "mermaid"])
    assert mermaid.exit_code == 0
    assert mermaid.output.startswith("flowchart LR")
    assert "-.->|filter|" in mermaid.output
    dot = runner.invoke(app, ["lineage", "customers.email", "-p", str(DEMO), "--format", "dot"])
    assert dot.exit_code == 0
    assert '"customers.email" -> "customer_360.email" [label="direct"' in dot.output
    missing = runner.invoke(app, ["lineage", "nope", "-p", str(DEMO)])
    assert missing.exit_code != 0
