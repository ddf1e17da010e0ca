"""Regression (issue 15): moving ticket 4950 from agent 20 to agent 21 must decrement agent
20 as well as increment agent 21, whether the move arrives as a new ticket event (the
product takes the latest event per ticket) or as a CDC update of the tickets table. An
agent whose last ticket moves away disappears, from DuckDB and the online store."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tidegate.log.base import Message
from tidegate.platform import Platform
from tidegate.runtime.worker import StreamWorker
from tidegate.store.online.codec import decode_row

from ..runtime.conftest import differences  # type: ignore[import-not-found]

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_deskproject", Path(__file__).with_name("deskproject.py")
)
assert _spec is not None
assert _spec.loader is not None
desk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(desk)

#: ticket -> agent before the move: agent 20 has three open tickets, 21 two, 22 one
START = {4950: 20, 4951: 20, 4952: 20, 4960: 21, 4961: 21, 4970: 22}


@pytest.fixture
def desk_project(tmp_path: Path) -> Path:
    from tidegate.products.builder import build_products, load_sources

    root: Path = desk.write_desk_project(tmp_path / "desk")
    with Platform.open(root) as platform:
        load_sources(platform)
        StreamWorker(platform).close()
        assert all(r.status == "live" for r in build_products(platform))
    return root


def _apply(worker: StreamWorker) -> None:
    consumer = worker.intake.log.consumer("move", worker.topics)
    try:
        while records := consumer.poll(1000, 0.2):
            worker.process_batch(records)
    finally:
        consumer.close()


def _open(platform: Platform, product: str) -> dict[int, int]:
    types = {c: s.type for c, s in platform.project.products[product].columns.items()}
    found = platform.online.read_many(product, ["20", "21", "22"])
    return {int(k): int(decode_row(v, types)["open_tickets"]) for k, v in found.items()}


def _event(n: int, ticket: int, agent: int, at: int) -> dict[str, Any]:
    return {"event_id": f"e{n}", "ticket_id": ticket, "agent_id": agent, "status": "open", "at": at}


def test_a_ticket_event_moving_a_ticket_decrements_the_old_agent(desk_project: Path) -> None:
    with Platform.open(desk_project) as platform:
        worker = StreamWorker(platform)
        events = [_event(i, t, a, 1) for i, (t, a) in enumerate(START.items())]
        assert worker.intake.submit("ticket_events", events, "test").accepted == len(START)
        _apply(worker)
        assert _open(platform, "open_from_events") == {20: 3, 21: 2, 22: 1}
        moves = [_event(100, 4950, 21, 2), _event(101, 4970, 21, 2)]
        worker.intake.submit("ticket_events", moves, "test")
        _apply(worker)
        assert _open(platform, "open_from_events") == {20: 2, 21: 4}  # 22 has none left
        assert differences(platform, "open_from_events") == 0
        # A late event (older than the move) changes nothing.
        worker.intake.submit("ticket_events", [_event(102, 4950, 22, 0)], "test")
        _apply(worker)
        assert _open(platform, "open_from_events") == {20: 2, 21: 4}
        assert differences(platform, "open_from_events") == 0
        worker.close()


def _cdc(ticket: int, agent: int) -> Message:
    after = {"ticket_id": ticket, "agent_id": agent, "status": "open", "note": "n"}
    event = {"before": None, "after": after, "op": "u", "source": {"table": "tickets"}}
    return Message(str(ticket).encode(), json.dumps(event).encode())


def test_a_cdc_update_moving_a_ticket_decrements_the_old_agent(desk_project: Path) -> None:
    with Platform.open(desk_project) as platform:
        worker = StreamWorker(platform)
        worker.intake.log.append("tickets", [_cdc(t, a) for t, a in START.items()])
        _apply(worker)
        assert _open(platform, "open_per_agent") == {20: 3, 21: 2, 22: 1}
        worker.intake.log.append("tickets", [_cdc(4950, 21), _cdc(4970, 21)])
        _apply(worker)
        assert _open(platform, "open_per_agent") == {20: 2, 21: 4}
        assert differences(platform, "open_per_agent") == 0
        worker.close()
