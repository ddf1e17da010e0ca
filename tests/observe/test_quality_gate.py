"""Invariant 5: a product whose data breaks an `error` check is not published; consumers
keep the last good version (DuckDB view, online store, metadata, the API), the failing
rows are kept, and the owner's webhook hears about it once."""

from __future__ import annotations

from pathlib import Path

import httpx

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.products.builder import build_products

from .conftest import Webhook, add_observe

BREAKING = "checks:\n  - {type: accepted_values, column: risk_band, values: [low, medium]}\n"


def test_a_build_breaking_an_error_check_is_not_published(
    demo_copy: Path, webhook: Webhook
) -> None:
    add_observe(
        demo_copy,
        f"  alerts:\n    webhook_url: {webhook.url}/default\n"
        f"    owners: {{customer-care: {webhook.url}/care}}\n",
    )
    product = demo_copy / "products" / "churn_risk.yml"
    product.write_text(product.read_text() + BREAKING)
    with Platform.open(demo_copy) as platform:
        before = platform.meta.live_version("churn_risk")
        assert before is not None
        rows_before = platform.warehouse.count('products."churn_risk"')
        results = {r.product: r for r in build_products(platform, only=["churn_risk"])}
        failed = results["churn_risk"]
        assert failed.status == "failed"
        assert "risk_band__accepted_values" in failed.error
        assert results["marketing_audience"].status == "skipped"

        # the previous version stays live everywhere
        live = platform.meta.live_version("churn_risk")
        assert live is not None
        assert live.version == before.version
        assert platform.online.current_version("churn_risk") == before.version
        assert platform.warehouse.count('products."churn_risk"') == rows_before
        assert not platform.warehouse.has_relation("builds", f"churn_risk__v{failed.version}")

        # the failing rows are kept for inspection
        table = f'quality."churn_risk__v{failed.version}__risk_band__accepted_values"'
        kept = platform.warehouse.arrow(f"SELECT DISTINCT risk_band FROM {table}")
        assert kept.column("risk_band").to_pylist() == ["high"]

        # the API still serves the previous version
        key = create_key(platform.meta, "desk", ["support_agent"])[0]
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            response = httpx.get(
                f"http://127.0.0.1:{server.port}/v1/products/churn_risk/entities/1",
                headers={"Authorization": f"Bearer {key}", "X-Purpose": "support"},
                timeout=10,
            )
        finally:
            server.stop()
        assert response.status_code == 200
        assert response.json()["version"] == before.version

        # the owner's webhook got one Slack-compatible alert
        assert webhook.paths == ["/care"]
        alert = webhook.received[0]
        assert alert["kind"] == "quality_gate"
        assert alert["product"] == "churn_risk"
        assert alert["owner"] == "customer-care"
        assert "risk_band__accepted_values" in alert["text"]

        # the same failure again is deduplicated: still one alert
        (again, *_) = build_products(platform, only=["churn_risk"])
        assert again.status == "failed"
        assert len(webhook.received) == 1
        runs = platform.meta.runs("build", "churn_risk")
        assert runs[0]["status"] == "failed"
        assert "quality checks failed" in runs[0]["error"]

    # fixing the data contract publishes again
    product.write_text(product.read_text().replace(BREAKING, ""))
    with Platform.open(demo_copy) as platform:
        (fixed, *_) = build_products(platform, only=["churn_risk"])
        assert fixed.status == "live"
        assert platform.online.current_version("churn_risk") == fixed.version
