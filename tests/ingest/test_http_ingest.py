"""`POST /v1/events/{source}`: per-index reasons, dead letters, auth, unknown sources."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.log.sqlite import SqliteEventLog
from tidegate.meta.sqlite import sqlite_part
from tidegate.platform import Platform
from tidegate.platform.keys import create_key


@pytest.fixture
def api(stream_project: Path) -> Iterator[tuple[httpx.Client, dict[str, str], Path]]:
    with Platform.open(stream_project) as platform:
        keys = {
            role: "Bearer " + create_key(platform.meta, f"p-{role}", [role])[0]
            for role in ("ingester", "clicks_only", "support_agent")
        }
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
                yield client, keys, stream_project
        finally:
            server.stop()


def _logged(project: Path, topic: str) -> list[dict[str, object]]:
    log = SqliteEventLog(project / ".tidegate" / "log.db")
    try:
        records = [r for p in log.end_offsets(topic) for r in log.read(topic, p, 0, 1000)]
    finally:
        log.close()
    return [json.loads(r.value or b"null") for r in records]


def _dead(project: Path) -> list[tuple[str, str]]:
    store = sqlite_part(project / ".tidegate" / "metadata.db", "dead_letters")
    try:
        return [(d.source, d.reason) for d in store.list(limit=1000)]
    finally:
        store.close()


def test_a_batch_is_answered_per_index(api: tuple[httpx.Client, dict[str, str], Path]) -> None:
    client, keys, project = api
    events = [
        {"order_id": 1, "customer_id": 7, "amount": 10.5, "ordered_at": "2026-01-01T10:00:00Z"},
        {"order_id": 2, "customer_id": "8", "amount": "3", "status": "paid"},  # coerced
        {"order_id": 3, "customer_id": 7, "amount": "lots"},
        {"customer_id": 9, "amount": 1.0},
        [1, 2],
        {"order_id": 4, "customer_id": 9, "amount": 2.0, "ordered_at": "yesterday"},
        {"order_id": 5, "customer_id": 9, "amount": 2.0, "extra": "ignored"},
    ]
    response = client.post(
        "/v1/events/orders", json=events, headers={"Authorization": keys["ingester"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {2, 3, 4, 5}
    assert "column 'amount'" in reasons[2]
    assert "'lots' is not a number" in reasons[2]
    assert "missing key column 'order_id'" in reasons[3]
    assert "must be a JSON object, not an array" in reasons[4]
    assert "column 'ordered_at'" in reasons[5]
    assert sorted(e["order_id"] for e in _logged(project, "orders")) == [1, 2, 5]  # type: ignore[type-var]
    assert sorted(_dead(project)) == sorted(("orders", reasons[i]) for i in (2, 3, 4, 5))


def test_json_lines_reject_a_malformed_line_alone(
    api: tuple[httpx.Client, dict[str, str], Path],
) -> None:
    client, keys, project = api
    body = (
        b'{"event_id": "a", "customer_id": 1, "url": "/"}\n'
        b'{"event_id": "b", "customer_id": \n'
        b'{"event_id": "c", "customer_id": 2, "url": "' + b"x" * 3000 + b'"}\n'
        b'{"event_id": "d", "customer_id": null, "url": "/home"}\n'
    )
    response = client.post(
        "/v1/events/clicks",
        content=body,
        headers={"Authorization": keys["clicks_only"], "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in result["rejected"]}
    assert reasons[1].startswith("malformed JSON")
    assert "more than max_event_bytes (2,000)" in reasons[2]
    assert sorted(e["event_id"] for e in _logged(project, "clicks")) == ["a", "d"]  # type: ignore[type-var]
    assert len(_dead(project)) == 2


def test_unknown_source_is_a_json_404(api: tuple[httpx.Client, dict[str, str], Path]) -> None:
    client, keys, _ = api
    response = client.post(
        "/v1/events/nope", json=[{}], headers={"Authorization": keys["ingester"]}
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_source"
    assert "no stream source named 'nope'" in error["message"]
    assert "orders" in error["message"]


def test_who_may_post(api: tuple[httpx.Client, dict[str, str], Path]) -> None:
    client, keys, project = api
    event = [{"order_id": 1, "customer_id": 1, "amount": 1.0}]
    assert client.post("/v1/events/orders", json=event).status_code == 401
    denied = client.post(
        "/v1/events/orders", json=event, headers={"Authorization": keys["clicks_only"]}
    )
    assert denied.status_code == 403
    assert "ingest" in denied.json()["error"]["message"]
    reader = client.post(
        "/v1/events/orders", json=event, headers={"Authorization": keys["support_agent"]}
    )
    assert reader.status_code == 403
    assert _logged(project, "orders") == []


def test_a_body_that_is_not_json_is_a_400(api: tuple[httpx.Client, dict[str, str], Path]) -> None:
    client, keys, _ = api
    response = client.post(
        "/v1/events/orders", content=b"{nope", headers={"Authorization": keys["ingester"]}
    )
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]["message"]
    wrapped = client.post(
        "/v1/events/orders",
        json={"events": [{"order_id": 1, "customer_id": 1, "amount": 1}]},
        headers={"Authorization": keys["ingester"]},
    )
    assert wrapped.json() == {
        "accepted": 1,
        "rejected": [],
        "unknown_fields": {"policy": "drop", "events": 0, "fields": {}},
    }


def test_every_post_is_audited_allowed_or_denied(
    api: tuple[httpx.Client, dict[str, str], Path],
) -> None:
    """Issue 13: ingest calls were not audited at all."""
    client, keys, project = api
    event = [{"order_id": 1, "customer_id": 1, "amount": 1.0}, {"order_id": "x"}]
    calls = [
        (client.post("/v1/events/orders", json=event), None),
        (
            client.post(
                "/v1/events/orders", json=event, headers={"Authorization": keys["clicks_only"]}
            ),
            "p-clicks_only",
        ),
        (
            client.post(
                "/v1/events/nowhere", json=event, headers={"Authorization": keys["ingester"]}
            ),
            "p-ingester",
        ),
        (
            client.post(
                "/v1/events/orders", json=event, headers={"Authorization": keys["ingester"]}
            ),
            "p-ingester",
        ),
    ]
    assert [r.status_code for r, _ in calls] == [401, 403, 404, 200]
    # the API stores audit records in batches (audit/writer.py): wait for the batch
    deadline = time.monotonic() + 20
    while True:
        with Platform.open(project) as platform:
            records = [r for _, r in platform.audit.records() if r.action == "ingest"]
            assert platform.audit.verify() == []
        if len(records) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(r.principal, r.outcome, r.detail.get("code")) for r in records] == [
        ("anonymous", "denied", "unauthenticated"),
        ("p-clicks_only", "denied", "forbidden"),
        ("p-ingester", "denied", "unknown_source"),
        ("p-ingester", "allowed", None),
    ]
    allowed = records[-1]
    assert allowed.rows == 1
    assert allowed.detail["accepted"] == 1
    assert allowed.detail["rejected"] == 1
    assert allowed.detail["source"] == "orders"
