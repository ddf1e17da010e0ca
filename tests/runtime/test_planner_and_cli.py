"""The planner's choices and reasons, scheduled rebuilds, and the status / dlq commands."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tidegate.cli.app import app
from tidegate.ingest.deadletters import DeadLetter
from tidegate.ingest.intake import open_intake
from tidegate.log.base import Message
from tidegate.platform import Platform
from tidegate.products.planner import plan_project
from tidegate.project import load_project
from tidegate.runtime.scheduler import Scheduler
from tidegate.runtime.worker import StreamWorker

from .conftest import differences  # type: ignore[import-not-found]


def test_modes_follow_sql_shape_and_freshness(stream_project: Path) -> None:
    (stream_project / "products" / "recent_clicks.yml").write_text(
        "name: recent_clicks\nowner: t\nkey: customer_id\nfreshness: 1m\npurposes: [support]\n"
        "sql: SELECT customer_id, count(*) AS clicks FROM clicks\n"
        "  WHERE occurred_at > now() - INTERVAL 1 HOUR GROUP BY customer_id\n"
        "columns: {customer_id: {type: BIGINT, classification: user.unique_id},"
        " clicks: {type: BIGINT, classification: none}}\n"
    )
    (stream_project / "products" / "click_total.yml").write_text(
        "name: click_total\nowner: t\nkey: n\nfreshness: 1s\npurposes: [support]\n"
        "sql: SELECT count(*) AS n FROM clicks\n"
        "columns: {n: {type: BIGINT, classification: none}}\n"
    )
    plans = plan_project(load_project(stream_project))
    assert plans["customer_orders"].mode == "incremental"
    assert plans["customer_orders"].key_columns["orders"] == "customer_id"
    assert plans["top_customers"].mode == "batch"
    assert "window over the whole result" in plans["top_customers"].explain()
    # keys recomputed at different times would each see their own now(): batch, rebuilt
    # every `freshness` whether or not events came
    assert plans["recent_clicks"].mode == "batch"
    assert "reads the clock (NOW())" in plans["recent_clicks"].explain()
    assert plans["recent_clicks"].time_window
    assert plans["recent_clicks"].reevaluate_every == 60
    assert plans["click_total"].mode == "batch"
    assert "aggregates over all rows" in plans["click_total"].explain()


def test_a_stale_batch_product_is_rebuilt_when_due(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        intake = worker.intake
        intake.submit("orders", [{"order_id": 1, "customer_id": 3, "amount": 99.0}], "t")
        consumer = intake.log.consumer("g", ["orders"])
        worker.process_batch(consumer.poll(100, 1.0))
        consumer.close()
        assert differences(platform, "customer_orders") == 0
        assert differences(platform, "top_customers") != 0  # batch: not yet
        clock = [platform.meta.live_version("top_customers").built_at + 10]  # type: ignore[union-attr]
        scheduler = Scheduler(platform, intake, worker.plans, worker.freshness, lambda: clock[0])
        scheduler.tick()
        assert scheduler.rebuilds == []  # stale, but its 1h freshness is not used up
        clock[0] += 3600
        scheduler._last_tick = 0
        scheduler.tick()
        assert scheduler.rebuilds == ["top_customers"]
        assert differences(platform, "top_customers") == 0
        state = worker.freshness.all()["top_customers"]
        assert state.stale_since is None
        assert state.updates == 1
        worker.close()


def test_status_and_dead_letter_commands(built_stream_project: Path) -> None:
    project = str(built_stream_project)
    with Platform.open(built_stream_project) as platform:
        worker = StreamWorker(platform)
        worker.intake.submit("orders", [{"order_id": 1, "customer_id": 2, "amount": 1.0}], "t")
        worker.intake.log.append("orders", [Message(b"x", b'{"order_id": "x"}')])
        consumer = worker.intake.log.consumer("g", ["orders"])
        worker.process_batch(consumer.poll(100, 1.0))
        consumer.close()
        worker.close()
    runner = CliRunner()
    result = runner.invoke(app, ["status", "-p", project, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    products = {p["product"]: p for p in body["products"]}
    assert products["customer_orders"]["mode"] == "incremental"
    assert products["customer_orders"]["updates"] == 1
    assert products["top_customers"]["current_lag"] > 0  # stale until its rebuild
    assert body["dead_letters"] == {"orders": 1}

    listed = runner.invoke(app, ["dlq", "list", "-p", project, "--json"])
    letters = json.loads(listed.output)
    assert len(letters) == 1
    assert "column 'order_id'" in letters[0]["reason"]
    shown = runner.invoke(app, ["dlq", "show", str(letters[0]["id"]), "-p", project])
    assert '{"order_id": "x"}' in shown.output
    # Still invalid: replay keeps it, with the reason, and says so.
    replayed = runner.invoke(app, ["dlq", "replay", str(letters[0]["id"]), "-p", project])
    assert replayed.exit_code == 1
    assert "1 still fail" in replayed.output

    # One that passes now (say, the contract was fixed) goes back to its topic.
    intake = open_intake(load_project(built_stream_project))
    before = sum(intake.log.end_offsets("orders").values())
    intake.dead.add(
        [
            DeadLetter(
                "orders", "was too big", b'{"order_id": 7, "customer_id": 1, "amount": 2}', "http"
            )
        ]
    )
    intake.close()
    fixed = runner.invoke(app, ["dlq", "replay", "--source", "orders", "-p", project])
    assert "replayed 1; 1 still fail" in fixed.output
    intake = open_intake(load_project(built_stream_project))
    assert sum(intake.log.end_offsets("orders").values()) == before + 1
    assert intake.dead.count("orders") == 1
    intake.close()
    missing = runner.invoke(app, ["dlq", "show", "999", "-p", project])
    assert missing.exit_code != 0
