"""OpenLineage RunEvents from real builds, each validated against the official schemas."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.observe.openlineage import LineageEmitter
from tidegate.platform import Platform
from tidegate.products.builder import build_products
from tidegate.project import load_project

from .conftest import Webhook, add_observe
from .olschema import problems


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_build_events_validate_and_carry_lineage_quality_and_metrics(demo_copy: Path) -> None:
    add_observe(demo_copy, "  openlineage: {transport: file, path: lineage/events.jsonl}\n")
    product = demo_copy / "products" / "churn_risk.yml"
    product.write_text(
        product.read_text()
        + "checks:\n  - {type: range, column: churn_score, min: 0, max: 100}\n"
        + "  - {type: row_count, min: 1}\n"
    )
    with Platform.open(demo_copy) as platform:
        results = build_products(platform)
        assert {r.status for r in results} == {"live"}
        product.write_text(
            product.read_text() + "  - {type: accepted_values, column: risk_band, values: [low]}\n"
        )
    with Platform.open(demo_copy) as platform:
        build_products(platform, only=["churn_risk"])
    events = _events(demo_copy / "lineage" / "events.jsonl")
    for event in events:
        assert problems(event) == [], event["job"]["name"]
    kinds = [(e["job"]["name"], e["eventType"]) for e in events]
    assert kinds[:6] == [
        ("build.customer_360", "START"),
        ("build.customer_360", "COMPLETE"),
        ("build.churn_risk", "START"),
        ("build.churn_risk", "COMPLETE"),
        ("build.marketing_audience", "START"),
        ("build.marketing_audience", "COMPLETE"),
    ]
    assert kinds[6:] == [("build.churn_risk", "START"), ("build.churn_risk", "FAIL")]
    complete = events[3]
    assert complete["run"]["runId"] == events[2]["run"]["runId"]
    assert [i["name"] for i in complete["inputs"]] == ["products.customer_360", "raw.tickets"]
    output = complete["outputs"][0]
    assert output["name"] == "products.churn_risk"
    facets = output["facets"]
    assert {"schema", "columnLineage", "dataQualityMetrics", "dataQualityAssertions"} <= set(facets)
    inputs = facets["columnLineage"]["fields"]["low_satisfaction_tickets"]["inputFields"]
    assert {
        "name": "raw.tickets",
        "field": "satisfaction",
        "transformations": [{"type": "INDIRECT", "subtype": "FILTER"}],
    } in [{k: v for k, v in i.items() if k != "namespace"} for i in inputs]
    assertions = {a["name"]: a["success"] for a in facets["dataQualityAssertions"]["assertions"]}
    assert assertions == {"churn_score__range": True, "row_count": True}
    assert facets["dataQualityMetrics"]["rowCount"] > 0
    fail = events[-1]
    assert "risk_band__accepted_values" in fail["run"]["facets"]["errorMessage"]["message"]
    failed = {
        a["name"]: a["success"]
        for a in fail["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    }
    assert failed["risk_band__accepted_values"] is False


def test_incremental_batches_and_sync_events_validate(demo_copy: Path, webhook: Webhook) -> None:
    """The HTTP transport, with a local server as the lineage backend."""
    add_observe(
        demo_copy,
        f"  openlineage: {{transport: http, url: '{webhook.url}', batch_updates: 3}}\n",
    )
    project = load_project(demo_copy)
    emitter = LineageEmitter(project)
    for changed in (4, 5):
        emitter.incremental_update("customer_360", changed)
    assert webhook.received == []  # batched: nothing until 3 updates
    emitter.incremental_update("customer_360", 6)
    run_id = str(uuid.uuid4())
    emitter.sync_event("START", "crm_audience", run_id)
    emitter.sync_event("COMPLETE", "crm_audience", run_id, rows=12)
    emitter.sync_event("FAIL", "crm_audience", str(uuid.uuid4()), error="CRM refused")
    assert webhook.paths == ["/api/v1/lineage"] * 5
    for event in webhook.received:
        assert problems(event) == []
    start, complete = webhook.received[:2]
    assert (start["job"]["name"], start["eventType"]) == ("incremental.customer_360", "START")
    output = complete["outputs"][0]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 15
    sync = webhook.received[3]["outputs"][0]
    # the real location: the SQLite file, then the table
    assert (sync["namespace"], sync["name"]) == (
        f"sqlite://{(demo_copy / 'crm.db').resolve()}",
        "audience",
    )
    lineage = sync["facets"]["columnLineage"]["fields"]["segment"]["inputFields"]
    assert [(i["name"], i["field"]) for i in lineage] == [
        ("products.marketing_audience", "risk_band")
    ]


@pytest.mark.services
def test_kafka_transport(demo_copy: Path, kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer

    topic = f"openlineage-{uuid.uuid4().hex[:8]}"
    add_observe(
        demo_copy,
        f"  openlineage: {{transport: kafka, bootstrap: '{kafka_bootstrap}', topic: {topic}}}\n",
    )
    emitter = LineageEmitter(load_project(demo_copy))
    run_id = str(uuid.uuid4())
    emitter.sync_event("START", "crm_audience", run_id)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"test-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                break
        assert message is not None
        assert not message.error()
        event = json.loads(message.value())
    finally:
        consumer.close()
    assert event["run"]["runId"] == run_id
    assert problems(event) == []
