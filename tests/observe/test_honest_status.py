"""`status`, `/metrics` and `explain` judge every product's SLO alike (issue 17 item 4).

The stream shop gains a static product with a tight SLO (breach once older than it), a
static one with a loose SLO (fresh), and an idle incremental product; the batch
`top_customers` gets a 1s SLO with an unapplied upstream change (stale: breach), and
`customer_orders` (incremental) gets events in its topic that no worker applies
(pending: breach). The three views must say the same for each; then the compliance
history, sampled by the scheduler, shows in `status` and `/metrics`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient
from typer.testing import CliRunner

from tidegate.api import create_app
from tidegate.cli.app import app
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.runtime.scheduler import Scheduler
from tidegate.runtime.worker import StreamWorker

PRODUCTS = {
    "names_tight.yml": """
name: names_tight
owner: test
key: customer_id
freshness: 1s
purposes: [support]
sql: SELECT customer_id, name FROM customers
columns:
  customer_id: {type: BIGINT, classification: none, nullable: false}
  name: {type: VARCHAR, classification: none}
""",
    "names_loose.yml": """
name: names_loose
owner: test
key: customer_id
freshness: 1d
purposes: [support]
sql: SELECT customer_id, name FROM customers
columns:
  customer_id: {type: BIGINT, classification: none, nullable: false}
  name: {type: VARCHAR, classification: none}
""",
    "click_counts.yml": """
name: click_counts
owner: test
key: customer_id
freshness: 1s
purposes: [support]
sql: |
  SELECT customer_id, count(*) AS clicks FROM clicks
  WHERE customer_id IS NOT NULL GROUP BY customer_id
columns:
  customer_id: {type: BIGINT, classification: none, nullable: false}
  clicks: {type: BIGINT, classification: none}
""",
}

EXPECTED = {
    "names_tight": ("static", False),
    "names_loose": ("static", True),
    "click_counts": ("incremental", True),  # idle: nothing waits for it
    "customer_orders": ("incremental", False),  # events wait in its topic
    "top_customers": ("batch", False),  # stale and older than its SLO
}


def _project(stream_project: Path) -> Path:
    for name, text in PRODUCTS.items():
        (stream_project / "products" / name).write_text(text.lstrip("\n"))
    top = stream_project / "products" / "top_customers.yml"
    top.write_text(top.read_text().replace("freshness: 1h", "freshness: 1s"))
    with Platform.open(stream_project) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    return stream_project


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _metrics(platform: Platform) -> dict[str, tuple[str, float]]:
    """product -> (mode, breach) from /metrics."""
    with TestClient(create_app(platform)) as client:
        text = client.get("/metrics").text
    found = {}
    pattern = r'tidegate_product_slo_breach\{mode="(\w+)",product="(\w+)"\} ([0-9.]+)'
    for mode, product, value in re.findall(pattern, text):
        found[product] = (mode, float(value))
    return found


def test_status_metrics_and_explain_agree(stream_project: Path) -> None:
    project = _project(stream_project)
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        # An order applied: top_customers (batch) is now stale; then orders nobody applies.
        worker.intake.submit("orders", [{"order_id": 1, "customer_id": 3, "amount": 5.0}], "t")
        consumer = worker.intake.log.consumer("g", ["orders"])
        worker.process_batch(consumer.poll(100, 1.0))
        consumer.close()
        worker.intake.submit("orders", [{"order_id": 2, "customer_id": 4, "amount": 1.0}], "t")
        worker.close()
    time.sleep(1.6)  # every 1s SLO is now used up

    status = {p["product"]: p for p in _cli("status", "-p", str(project), "--json")["products"]}
    explained = {p["product"]: p for p in _cli("explain", "-p", str(project), "--json")}
    with Platform.open(project) as platform:
        metrics = _metrics(platform)
    for product, (mode, within) in EXPECTED.items():
        assert status[product]["mode"] == explained[product]["mode"] == mode, product
        assert metrics[product] == (mode, float(not within)), product
        assert status[product]["within_slo"] is within, (product, status[product])
        assert explained[product]["within_slo"] is within, (product, explained[product])
    assert status["customer_orders"]["current_lag"] >= 1.5  # the waiting order's age
    assert status["click_counts"]["current_lag"] == 0
    assert status["names_tight"]["current_lag"] >= 1.5

    text = CliRunner().invoke(app, ["explain", "-p", str(project)]).output
    assert "names_tight: static" in text
    assert "now: SLO BREACH" in text
    assert "now: within SLO" in text


def test_compliance_history_in_status_and_metrics(stream_project: Path) -> None:
    project = _project(stream_project)
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        scheduler = Scheduler(platform, worker.intake, worker.plans, worker.freshness)
        start = time.time()
        scheduler.sample_slo(start)  # all fresh just after the build: 10s within
        scheduler.sample_slo(start + 10)  # 10s later the 1s SLOs are breached: 10s out
        worker.close()
    status = {p["product"]: p for p in _cli("status", "-p", str(project), "--json")["products"]}
    assert status["names_loose"]["compliance"] == {"1h": 1.0, "1d": 1.0, "7d": 1.0}
    assert status["names_tight"]["compliance"]["1h"] == 0.5
    with Platform.open(project) as platform, TestClient(create_app(platform)) as client:
        text = client.get("/metrics").text
    assert 'tidegate_product_slo_compliance_ratio{product="names_tight",window="1h"} 0.5' in text
    shown = CliRunner().invoke(app, ["status", "-p", str(project)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "50.0%" in shown.output
    assert "100.0%" in shown.output


def test_an_idle_batch_product_is_confirmed_fresh_by_the_scheduler(stream_project: Path) -> None:
    """Nothing changed upstream of a batch product: once half its SLO has passed, the
    scheduler confirms it current, so an idle batch product does not breach while a
    runtime keeps it; without one it would."""
    project = _project(stream_project)
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        scheduler = Scheduler(platform, worker.intake, worker.plans, worker.freshness)
        time.sleep(0.6)
        assert scheduler.confirm_idle(time.time()) == ["top_customers"]
        worker.close()
        seen = platform.meta.freshness.all()["top_customers"]
        assert seen.last_update is not None
        assert time.time() - seen.last_update < 0.5
        assert seen.updates == 0  # a confirmation is not an update
        # A change upstream: no confirmation hides it; the rebuild stays owed.
        platform.meta.freshness.stale("top_customers", "batch", time.time())
        assert scheduler.confirm_idle(time.time() + 1) == []
