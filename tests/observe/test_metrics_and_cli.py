"""/metrics scraped from the real API; `tidegate observe` and `quality show` on real builds."""

from __future__ import annotations

from pathlib import Path

import httpx
from typer.testing import CliRunner

from tidegate.api import create_app
from tidegate.cli import app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.products.builder import build_products, load_sources

SERIES = [
    "tidegate_ingest_records",
    "tidegate_consumer_lag_records",
    "tidegate_product_freshness_seconds",
    "tidegate_product_freshness_slo_seconds",
    "tidegate_product_slo_breach",
    "tidegate_product_slo_breaches_total",
    "tidegate_build_runs_total",
    "tidegate_build_duration_seconds_bucket",
    "tidegate_sync_runs_total",
    "tidegate_sync_duration_seconds",
    "tidegate_api_request_duration_seconds_bucket",
    "tidegate_guard_decisions_total",
]


def test_metrics_are_scraped_with_the_named_series(demo_copy: Path) -> None:
    with Platform.open(demo_copy) as platform:
        key = create_key(platform.meta, "desk", ["support_agent"])[0]
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            headers = {"Authorization": f"Bearer {key}", "X-Purpose": "support"}
            assert (
                httpx.get(
                    f"{base}/v1/products/customer_360/entities/1", headers=headers
                ).status_code
                == 200
            )
            denied = {"Authorization": f"Bearer {key}", "X-Purpose": "marketing.email"}
            assert (
                httpx.get(f"{base}/v1/products/customer_360/entities/1", headers=denied).status_code
                == 403
            )
            response = httpx.get(f"{base}/metrics")
        finally:
            server.stop()
    assert response.status_code == 200
    text = response.text
    for name in SERIES:
        assert name in text, name
    assert 'tidegate_guard_decisions_total{decision="allowed",purpose="support"} 1.0' in text
    assert 'tidegate_guard_decisions_total{decision="denied",purpose="marketing.email"} 1.0' in text
    assert 'tidegate_build_runs_total{outcome="live",product="churn_risk"} 1.0' in text
    assert 'tidegate_product_freshness_slo_seconds{product="customer_360"} 900.0' in text
    assert 'route="/v1/products/{product}/entities/{key}"' in text


def test_observe_and_quality_show(small_project: Path, tmp_path: Path) -> None:
    path = small_project / "products" / "customer_profile.yml"
    path.write_text(
        path.read_text() + "checks:\n  - {type: unique, column: email, severity: warn}\n"
    )
    with Platform.open(small_project) as platform:
        load_sources(platform)
        build_products(platform)
        build_products(platform)
    runner = CliRunner()
    shown = runner.invoke(app, ["observe", "customer_profile", "-p", str(small_project)])
    assert shown.exit_code == 0, shown.output
    for pillar in ("freshness", "volume", "distribution", "schema", "lineage: reads customers"):
        assert pillar in shown.output
    assert "▁" in shown.output or "█" in shown.output
    picture = tmp_path / "rows.svg"
    plotted = runner.invoke(
        app,
        [
            "observe",
            "customer_profile",
            "-p",
            str(small_project),
            "--plot",
            "null_percent",
            "--column",
            "email",
            "--out",
            str(picture),
        ],
    )
    assert plotted.exit_code == 0, plotted.output
    assert picture.read_text().lstrip().startswith("<?xml")
    results = runner.invoke(app, ["quality", "show", "customer_profile", "-p", str(small_project)])
    assert results.exit_code == 0, results.output
    assert "email__unique" in results.output
    rows = runner.invoke(
        app,
        [
            "quality",
            "show",
            "customer_profile",
            "email__unique",
            "-p",
            str(small_project),
            "--json",
        ],
    )
    assert rows.exit_code == 0, rows.output
    assert '"customer_id": 4' in rows.output
