"""Debezium semantics in full, on the streamshop's `accounts` CDC source: unavailable-value
placeholders keep the stored value, tombstones are accepted on every way in (HTTP, drop
folders, the log) and never dead-lettered, truncates empty the table, and schema-wrapped
and plain envelopes mean the same. After each batch the product equals a rebuild."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.ingest.files import ingest_folder
from tidegate.ingest.intake import Intake, open_intake
from tidegate.ingest.validate import UNAVAILABLE
from tidegate.log.base import Message
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.runtime.worker import StreamWorker

from ..runtime.conftest import differences  # type: ignore[import-not-found]


def _event(op: str, before: Any = None, after: Any = None) -> dict[str, Any]:
    return {"before": before, "after": after, "op": op, "source": {"table": "accounts"}}


def _wrapped(value: Any) -> dict[str, Any]:
    """The JSON converter with `schemas.enable=true`."""
    return {"schema": {"type": "struct", "optional": False}, "payload": value}


def _account(id_: int, customer: int, tier: Any) -> dict[str, Any]:
    return {"id": id_, "customer_id": customer, "tier": tier}


def _apply(worker: StreamWorker, group: str = "g") -> None:
    consumer = worker.intake.log.consumer(group, ["accounts"])
    try:
        while records := consumer.poll(1000, 0.2):
            worker.process_batch(records)
    finally:
        consumer.close()


def _raw(platform: Platform) -> dict[int, tuple[Any, Any]]:
    with platform.warehouse.cursor() as db:
        rows = db.execute('SELECT id, customer_id, tier FROM raw."accounts"').fetchall()
    return {int(r[0]): (r[1], r[2]) for r in rows}


def _tiers(platform: Platform) -> dict[int, Any]:
    with platform.warehouse.cursor() as db:
        rows = db.execute(
            'SELECT customer_id, tier FROM products."customer_orders" WHERE tier IS NOT NULL'
        ).fetchall()
    return {int(r[0]): r[1] for r in rows}


def _dead(root: Path) -> list[str]:
    """Dead letters' reasons, read through the project's own metadata store."""
    from contextlib import closing

    from tidegate.meta import open_metadata
    from tidegate.project.loader import load_project

    project = load_project(root)
    with closing(open_metadata(project.config.backends.metadata, root)) as meta:
        return [d.reason for d in meta.dead_letters.list(limit=100)]


def _log(intake: Intake, *events: Any) -> None:
    intake.log.append(
        "accounts",
        [
            Message(b"k", None) if e is None else Message(b"k", json.dumps(e).encode())
            for e in events
        ],
    )


def test_unavailable_placeholders_keep_the_stored_value(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        _log(worker.intake, _event("c", after=_account(1, 3, "gold")))
        _apply(worker)
        # An update that moves the row to customer 4 without capturing `tier` (TOASTed).
        _log(worker.intake, _event("u", {"id": 1}, _account(1, 4, UNAVAILABLE)))
        # In one batch: a create, then an update whose tier is the placeholder.
        _log(
            worker.intake,
            _event("c", after=_account(2, 5, "silver")),
            _event("u", {"id": 2}, _account(2, 5, UNAVAILABLE)),
        )
        _apply(worker)
        assert _raw(platform) == {1: (4, "gold"), 2: (5, "silver")}
        assert _tiers(platform) == {4: "gold", 5: "silver"}  # customer 3 lost its account
        assert differences(platform, "customer_orders") == 0
        assert _dead(built_stream_project) == []
        worker.close()


def test_a_truncate_empties_the_table_and_later_changes_still_apply(
    built_stream_project: Path,
) -> None:
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        _log(
            worker.intake,
            _event("c", after=_account(1, 3, "gold")),
            _event("c", after=_account(2, 4, "pro")),
        )
        _apply(worker)
        assert _tiers(platform) == {3: "gold", 4: "pro"}
        truncate = {"op": "t", "source": {"table": "accounts"}, "before": None, "after": None}
        _log(worker.intake, truncate, _event("c", after=_account(3, 6, "free")))
        _apply(worker)
        assert _raw(platform) == {3: (6, "free")}
        assert _tiers(platform) == {6: "free"}
        assert differences(platform, "customer_orders") == 0
        worker.close()


def test_schema_wrapped_and_plain_envelopes_mean_the_same(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        _log(
            worker.intake,
            _wrapped(_event("c", after=_account(1, 3, "gold"))),
            _event("c", after=_account(2, 4, "pro")),
            _wrapped(_event("u", _account(2, 4, "pro"), _account(2, 4, "max"))),
            _event("d", _wrapped({"id": 1}) | {"id": 1}, None),
        )
        worker.intake.log.append(
            "accounts", [Message(json.dumps(_wrapped({"id": 1})).encode(), None)]
        )
        _apply(worker)
        assert _raw(platform) == {2: (4, "max")}
        assert _dead(built_stream_project) == []
        assert differences(platform, "customer_orders") == 0
        worker.close()


@pytest.fixture
def api(built_stream_project: Path) -> Iterator[tuple[httpx.Client, str]]:
    with Platform.open(built_stream_project) as platform:
        key = "Bearer " + create_key(platform.meta, "cdc", ["ingester"])[0]
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
                yield client, key
        finally:
            server.stop()


def test_tombstones_over_http_are_accepted_not_dead_lettered(
    api: tuple[httpx.Client, str], built_stream_project: Path
) -> None:
    client, key = api
    headers = {"Authorization": key}
    batch = [
        _event("c", after=_account(1, 3, "gold")),
        _event("c", after=_account(2, 4, "pro")),
        _event("d", {"id": 1}, None),
        None,  # the tombstone after the delete, as Debezium writes it
        {"key": {"id": 2}, "value": None},  # a keyed tombstone as a Kafka record in JSON
    ]
    answer = client.post("/v1/events/accounts", json=batch, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accepted": 5,
        "rejected": [],
        "unknown_fields": {"policy": "drop", "events": 0, "fields": {}},
    }
    lines = b"\n".join(
        [json.dumps(_event("c", after=_account(5, 7, "free"))).encode(), b"null", b""]
    )
    answer = client.post(
        "/v1/events/accounts",
        content=lines,
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert answer.json() == {
        "accepted": 2,
        "rejected": [],
        "unknown_fields": {"policy": "drop", "events": 0, "fields": {}},
    }
    assert _dead(built_stream_project) == []
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        _apply(worker)
        assert _raw(platform) == {5: (7, "free")}  # the keyed tombstone deleted account 2
        assert differences(platform, "customer_orders") == 0
        worker.close()
    assert _dead(built_stream_project) == []


def test_tombstones_in_a_drop_folder_are_accepted(built_stream_project: Path) -> None:
    inbox = built_stream_project / "inbox"
    inbox.mkdir()
    lines = [
        json.dumps(_event("c", after=_account(1, 3, "gold"))),
        json.dumps(_event("c", after=_account(2, 4, "pro"))),
        json.dumps(_event("d", {"id": 1}, None)),
        "null",
    ]
    (inbox / "a.jsonl").write_text("\n".join(lines) + "\n")
    (inbox / "b.json").write_text(json.dumps([_event("d", {"id": 2}, None), None]))
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        report = ingest_folder(intake, "accounts", inbox)
        intake.close()
        assert (report.accepted, report.rejected) == (6, 0)
        assert _dead(built_stream_project) == []
        worker = StreamWorker(platform)
        _apply(worker)
        assert _raw(platform) == {}
        assert _tiers(platform) == {}
        assert differences(platform, "customer_orders") == 0
        worker.close()
