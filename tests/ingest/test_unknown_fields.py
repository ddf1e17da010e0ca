"""Unknown event fields follow the source's `unknown_fields` policy and are always counted
(issue 19 item 6): the ingest answer, `tidegate status`, `/metrics` and the dead letters
say what came in beyond the declared columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tidegate.api import create_app
from tidegate.cli import app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.errors import ConfigError
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.project import load_project

from .test_http_ingest import _dead, _logged

EVENTS = [
    {"order_id": 1, "customer_id": 7, "amount": 1.0, "coupon": "X1", "utm": "mail"},
    {"order_id": 2, "customer_id": 7, "amount": 2.0, "coupon": "X2"},
    {"order_id": 3, "customer_id": 8, "amount": 3.0},
]


def _with_policy(project: Path, policy: str | None) -> None:
    if policy is None:
        return
    path = project / "sources" / "orders.yml"
    path.write_text(path.read_text() + f"unknown_fields: {policy}\n")


@pytest.fixture
def post(stream_project: Path, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    _with_policy(stream_project, request.param)
    with Platform.open(stream_project) as platform:
        token = create_key(platform.meta, "p", ["ingester"])[0]
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{server.port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as client:
                yield client
        finally:
            server.stop()


def _status(project: Path) -> tuple[dict[str, object], str]:
    runner = CliRunner()
    as_json = runner.invoke(app, ["status", "-p", str(project), "--json"])
    assert as_json.exit_code == 0, as_json.output
    text = runner.invoke(app, ["status", "-p", str(project)])
    assert text.exit_code == 0, text.output
    return json.loads(as_json.output)["unknown_fields"], text.output


@pytest.mark.parametrize("post", [None], indirect=True)
def test_the_default_drops_them_before_the_log_and_counts_them(
    post: httpx.Client, stream_project: Path
) -> None:
    body = post.post("/v1/events/orders", json=EVENTS).json()
    assert body["accepted"] == 3
    assert body["rejected"] == []
    assert body["unknown_fields"] == {
        "policy": "drop",
        "events": 2,
        "fields": {"coupon": 2, "utm": 1},
    }
    logged = _logged(stream_project, "orders")
    assert [sorted(e) for e in logged] == [["amount", "customer_id", "order_id"]] * 3  # type: ignore[arg-type]
    post.post("/v1/events/orders", json=EVENTS[:1])
    unknown, text = _status(stream_project)
    assert unknown == {"orders": {"policy": "drop", "events": 3, "fields": {"coupon": 3, "utm": 2}}}
    assert "unknown fields in orders: 3 events (coupon 3, utm 2), dropped" in text
    metrics = post.get("/metrics").text
    assert (
        'tidegate_ingest_unknown_fields_total{field="coupon",policy="drop",source="orders"} 3.0'
        in metrics
    )
    assert (
        'tidegate_ingest_unknown_fields_total{field="",policy="drop",source="orders"} 3.0'
        in metrics
    )


@pytest.mark.parametrize("post", ["keep"], indirect=True)
def test_keep_logs_them_as_sent(post: httpx.Client, stream_project: Path) -> None:
    body = post.post("/v1/events/orders", json=EVENTS).json()
    assert body["accepted"] == 3
    assert body["unknown_fields"]["policy"] == "keep"
    assert body["unknown_fields"]["events"] == 2
    logged = _logged(stream_project, "orders")
    assert logged[0]["coupon"] == "X1"
    assert logged[0]["utm"] == "mail"
    unknown, text = _status(stream_project)
    assert unknown["orders"] == {"policy": "keep", "events": 2, "fields": {"coupon": 2, "utm": 1}}
    assert "kept in the log" in text


@pytest.mark.parametrize("post", ["reject"], indirect=True)
def test_reject_dead_letters_them_with_the_fields_named(
    post: httpx.Client, stream_project: Path
) -> None:
    body = post.post("/v1/events/orders", json=EVENTS).json()
    assert body["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {0, 1}
    assert reasons[0].startswith("unknown field(s) 'coupon', 'utm': source 'orders'")
    assert "unknown_fields: reject" in reasons[0]
    assert body["unknown_fields"] == {"policy": "reject", "events": 0, "fields": {}}
    assert sorted(_dead(stream_project)) == sorted(("orders", reasons[i]) for i in (0, 1))
    assert [e["order_id"] for e in _logged(stream_project, "orders")] == [3]


def test_a_policy_other_than_the_three_is_a_config_error(stream_project: Path) -> None:
    _with_policy(stream_project, "ignore")
    with pytest.raises(ConfigError) as bad:
        load_project(stream_project)
    assert "sources/orders.yml:13: [unknown_fields] Input should be 'reject', 'keep' or 'drop'" in (
        str(bad.value)
    )


def test_events_written_to_the_topic_directly_are_counted_once(stream_project: Path) -> None:
    """A Kafka producer (or Debezium) writes the topic without the intake: the worker's
    decode counts its unknown fields; events that came through the intake are not
    counted a second time when the worker reads them."""
    from tidegate.ingest.intake import open_intake
    from tidegate.ingest.unknown import unknown_field_totals
    from tidegate.log.base import Record
    from tidegate.meta import open_metadata

    _with_policy(stream_project, "keep")
    intake = open_intake(load_project(stream_project))
    try:
        intake.submit("orders", EVENTS[:1], "http")  # counted here, logged with its header
        direct = json.dumps({"order_id": 9, "customer_id": 1, "amount": 1.0, "coupon": "Z"})
        for record in (
            Record("orders", 0, 0, None, direct.encode()),  # no tidegate-source header
            Record("orders", 0, 1, None, direct.encode(), (("tidegate-source", b"orders"),)),
        ):
            change = intake.decode(record)
            assert not isinstance(change, Exception)
        intake.unknown.flush()
    finally:
        intake.close()
    project = load_project(stream_project)
    meta = open_metadata(project.config.backends.metadata, stream_project)
    try:
        totals = unknown_field_totals(meta.observations, ["orders"])
    finally:
        meta.close()
    assert totals == {"orders": {"": 2, "coupon": 2, "utm": 1}}
