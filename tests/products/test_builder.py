"""Builds publish atomically: a failed build leaves the previous version serving everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.project.scaffold import scaffold


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "p"
    scaffold(directory)
    return directory


def _csv(directory: Path, body: str) -> None:
    (directory / "data" / "customers.csv").write_text(
        "customer_id,email,country,signed_up\n" + body
    )


def test_build_publishes_versions_in_duckdb_online_store_and_metadata(project_dir: Path) -> None:
    with Platform.open(project_dir) as platform:
        load_sources(platform)
        (first,) = build_products(platform)
        assert (first.status, first.version, first.rows) == ("live", 1, 3)
        _csv(project_dir, "1,a@x.test,GB,2024-01-01\n")
        load_sources(platform)
        (second,) = build_products(platform)
        assert (second.status, second.version, second.rows) == ("live", 2, 1)
        assert platform.warehouse.count('products."customer_profile"') == 1
        assert platform.online.current_version("customer_profile") == 2
        assert platform.online.read("customer_profile", "2") is None
        live = platform.meta.live_version("customer_profile")
        assert live is not None
        assert live.version == 2
        assert [v.status for v in platform.meta.versions("customer_profile")] == ["retired", "live"]


def test_a_failed_build_keeps_the_previous_version(project_dir: Path) -> None:
    with Platform.open(project_dir) as platform:
        load_sources(platform)
        build_products(platform)
        _csv(project_dir, "1,a@x.test,GB,2024-01-01\n1,dup@x.test,FR,2024-01-02\n")
        load_sources(platform)
        (failed,) = build_products(platform)
        assert failed.status == "failed"
        assert "unique" in failed.error
        assert platform.warehouse.count('products."customer_profile"') == 3
        assert platform.online.current_version("customer_profile") == 1
        assert platform.online.read("customer_profile", "3") is not None
        live = platform.meta.live_version("customer_profile")
        assert live is not None
        assert live.version == 1
        runs = platform.meta.runs("build", "customer_profile")
        assert runs[0]["status"] == "failed"
        assert "unique" in runs[0]["error"]


def test_a_failing_product_skips_its_downstream(project_dir: Path) -> None:
    (project_dir / "products" / "profile_counts.yml").write_text(
        "name: profile_counts\nowner: t\nkey: country\npurposes: [analytics]\n"
        "sql: SELECT country, count(*) AS people FROM customer_profile GROUP BY country\n"
        "columns:\n  country: {type: VARCHAR, classification: user.contact.address.country}\n"
        "  people: {type: BIGINT, classification: none}\n"
    )
    _csv(project_dir, "1,a@x.test,GB,not-a-date\n")
    with Platform.open(project_dir) as platform:
        with pytest.raises(Exception, match="not-a-date"):
            load_sources(platform)
        _csv(project_dir, "1,a@x.test,GB,2024-01-01\n1,b@x.test,GB,2024-01-01\n")
        load_sources(platform)
        results = {r.product: r for r in build_products(platform)}
        assert results["customer_profile"].status == "failed"
        assert results["profile_counts"].status == "skipped"


def test_product_sql_reads_other_products(project_dir: Path) -> None:
    (project_dir / "products" / "profile_counts.yml").write_text(
        "name: profile_counts\nowner: t\nkey: country\npurposes: [analytics]\n"
        "sql: SELECT country, count(*) AS people FROM customer_profile GROUP BY country\n"
        "columns:\n  country: {type: VARCHAR, classification: user.contact.address.country}\n"
        "  people: {type: BIGINT, classification: none}\n"
    )
    with Platform.open(project_dir) as platform:
        load_sources(platform)
        results = build_products(platform)
        assert [r.product for r in results] == ["customer_profile", "profile_counts"]
        rows = platform.warehouse.arrow(
            'SELECT * FROM products."profile_counts" ORDER BY country'
        ).to_pylist()
        assert rows == [
            {"country": "FI", "people": 1},
            {"country": "GB", "people": 1},
            {"country": "US", "people": 1},
        ]
