"""The dead letters and health page on a project with stream sources: lag per partition,
dead letters with reasons, replay (role-gated, audited), in process and in Chromium.

The demo shop has no stream source and no role that may ingest, so this page is
exercised on the small stream project (tests/ingest/streamshop.py) with its default
local event log (four partitions per topic).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.log.base import Message
from tidegate.meta.parts import DeadLetter
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

from ..conftest import streamshop  # type: ignore[import-not-found]
from .test_console_browser import ARGS, CHROMIUM, shot

pytestmark = pytest.mark.services

ROLES = ("ingester", "support_agent")
VALID = {"order_id": 900, "customer_id": 3, "amount": 4.5, "status": "paid"}


@dataclass
class Stream:
    platform: Platform
    client: TestClient
    keys: dict[str, str]

    def get(self, path: str, role: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return self.client.get(path, headers=headers, follow_redirects=False)

    def post(self, path: str, role: str, data: dict[str, str]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return self.client.post(path, headers=headers, data=data, follow_redirects=False)


def _dead_letters(platform: Platform, good: int, bad: int) -> None:
    """`good` letters that pass now (the schema was fixed, say) and `bad` that still fail."""
    letters = [
        DeadLetter(
            source="orders",
            reason="amount: not a number",
            payload=json.dumps({**VALID, "order_id": 900 + i}).encode(),
            via="http",
            key=str(900 + i).encode(),
        )
        for i in range(good)
    ] + [
        DeadLetter(
            source="orders",
            reason="customer_id: not an integer",
            payload=b'{"order_id": 1, "customer_id": "two", "amount": 1}',
            via="http",
        )
        for _ in range(bad)
    ]
    platform.meta.dead_letters.add(letters)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    from tidegate.products.builder import build_products, load_sources

    root = streamshop.write_stream_project(tmp_path_factory.mktemp("console-stream") / "shop")
    platform = Platform.open(root)
    load_sources(platform)
    assert all(r.status == "live" for r in build_products(platform))
    platform.event_log.append(
        "orders",
        [
            Message(str(i).encode(), json.dumps({**VALID, "order_id": i}).encode())
            for i in range(1, 13)
        ],
    )
    keys = {role: create_key(platform.meta, f"stream-{role}", [role])[0] for role in ROLES}
    try:
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            yield Stream(platform, client, keys)
    finally:
        platform.close()


def _lag_rows(html: str) -> dict[tuple[str, str], tuple[int, int]]:
    rows = re.findall(
        r'<tr data-source="([^"]+)" data-partition="([^"]+)" data-end="(\d+)" data-lag="(\d+)">',
        html,
    )
    return {(s, p): (int(end), int(lag)) for s, p, end, lag in rows}


def test_health_shows_stream_lag_per_partition(stream: Stream) -> None:
    page = stream.get("/console/health", "support_agent")
    assert page.status_code == 200
    rows = _lag_rows(page.text)
    ends = stream.platform.event_log.end_offsets("orders")
    assert len(ends) == 4
    assert {p: v for (s, p), v in rows.items() if s == "orders"} == {
        str(p): (end, end)
        for p, end in ends.items()  # no worker has applied any yet
    }
    assert sum(end for end, _ in (rows[("orders", str(p))] for p in ends)) == 12
    assert rows[("clicks", "—")] == (0, 0)  # no event yet: said, not left out
    assert {s for s, _ in rows} == {"orders", "clicks", "accounts"}


def test_replay_dead_letters_is_role_gated_and_audited(stream: Stream) -> None:
    _dead_letters(stream.platform, good=2, bad=1)
    page = stream.get("/console/health", "support_agent")
    assert page.text.count('data-source="orders"><td>') >= 3  # the letters, with reasons
    assert "customer_id: not an integer" in page.text
    assert "Replay orders" not in page.text  # support_agent may not ingest
    assert '"customer_id": "two"' not in page.text  # payloads are personal data: hidden
    stream.platform.audit.flush()
    before = stream.platform.audit.last_seq()
    refused = stream.post("/console/health/replay", "support_agent", {"source": "orders"})
    assert refused.status_code == 403
    assert stream.platform.meta.dead_letters.counts_by_source()["orders"] == 3

    ends = sum(stream.platform.event_log.end_offsets("orders").values())
    assert "Replay orders" in stream.get("/console/health", "ingester").text
    done = stream.post("/console/health/replay", "ingester", {"source": "orders"})
    assert done.status_code == 303
    after = stream.get(done.headers["location"], "ingester")
    assert re.search(r'id="replayed">2 replayed, 1 still fail', after.text)
    assert stream.platform.meta.dead_letters.counts_by_source()["orders"] == 1
    assert sum(stream.platform.event_log.end_offsets("orders").values()) == ends + 2
    assert sum(end for (s, _), (end, _) in _lag_rows(after.text).items() if s == "orders") == (
        ends + 2
    )
    stream.platform.audit.flush()
    records = [r for _, r in stream.platform.audit.records(after_seq=before)]
    assert [(r.action, r.principal) for r in records if r.outcome == "denied"] == [
        ("deny", "stream-support_agent")
    ]
    replays = [r for r in records if r.detail.get("op") == "dlq.replay"]
    assert [(r.principal, r.detail["replayed"], r.detail["still_failing"]) for r in replays] == [
        ("stream-ingester", 2, 1)
    ]


def test_replay_from_the_page_in_the_browser(stream: Stream) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/browser.sh` (make test does)")
    from playwright.sync_api import sync_playwright

    _dead_letters(stream.platform, good=1, bad=0)
    server = BackgroundServer(create_app(stream.platform), _free_port(0))
    server.start()
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    try:
        page: Any = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(15_000)
        base = f"http://127.0.0.1:{server.port}"
        page.goto(f"{base}/console/signin")
        page.fill("input[name=key]", stream.keys["ingester"])
        page.click("#signin button[type=submit]")
        page.wait_for_url(f"{base}/console/")
        page.click("a[data-nav=health]")
        lag = page.locator("#lag tr[data-source=orders]")
        assert lag.count() == 4
        before = sum(int(v) for v in lag.evaluate_all("rows => rows.map(r => r.dataset.end)"))
        waiting = page.locator("#dead-letters tr[data-source=orders]").count()
        assert waiting >= 1
        shot(page, "12-health-stream")
        page.click("form.replay[data-source=orders] button")
        page.wait_for_selector("#replayed")
        assert re.match(r"1 replayed, \d+ still fail", page.inner_text("#replayed"))
        assert page.locator("#dead-letters tr[data-source=orders]").count() == waiting - 1
        ends = page.locator("#lag tr[data-source=orders]").evaluate_all(
            "rows => rows.map(r => r.dataset.end)"
        )
        assert sum(int(v) for v in ends) == before + 1
        shot(page, "13-health-replayed")
    finally:
        browser.close()
        playwright.stop()
        server.stop()
