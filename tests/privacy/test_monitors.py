"""Access monitors on the audit stream: each scenario raises its alert, to the log and as
a Slack-compatible webhook POST received by a local HTTP server; alerts are deduplicated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tidegate.audit.log import AuditRecord
from tidegate.platform import Platform
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
from tidegate.privacy.guard import guard_of
from tidegate.privacy.monitors import AccessMonitor, MonitorSettings, attach_monitors
from tidegate.requests.subject_requests import erase


class Hook:
    def __init__(self) -> None:
        self.url = ""
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    def kinds(self) -> list[str]:
        return [r["tidegate"]["kind"] for r in self.received]

    def wait_for(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for body in self.received:
                    if body["tidegate"]["kind"] == kind:
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} alert; got {self.kinds()}")
                self.arrived.wait(left)


@pytest.fixture
def hook() -> Iterator[Hook]:
    received = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with received.arrived:
                received.received.append(body)
                received.arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/slack"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def platform(demo_copy: Path) -> Iterator[Platform]:
    with Platform.open(demo_copy) as opened:
        yield opened


def serve(principal: str, subjects: list[str], purpose: str = "support", **kw: Any) -> AuditRecord:
    return AuditRecord(
        action="serve",
        principal=principal,
        purpose=purpose,
        product="customer_360",
        subjects=tuple(subjects),
        **kw,
    )


def _slack_shape(body: dict[str, Any]) -> None:
    assert body["text"].startswith(":rotating_light: tidegate access monitor")
    assert body["blocks"][0]["type"] == "section"


def test_a_principal_reading_far_more_subjects_than_its_baseline(
    platform: Platform, hook: Hook
) -> None:
    now = time.time()
    # history: ten earlier minutes of 2-3 customers each
    for minute in range(10, 0, -1):
        at = now - minute * 60
        platform.audit.append(serve("desk", [str(minute), str(minute + 20)], at=at))
    monitor = attach_monitors(
        platform, webhook_url=hook.url, settings=MonitorSettings(window=60, factor=5, floor=2)
    )
    for i in range(0, 40, 4):
        platform.audit_writer.submit(serve("desk", [str(100 + i + j) for j in range(4)]))
    body = hook.wait_for("volume")
    _slack_shape(body)
    assert "desk read" in body["text"]
    assert [a.kind for a in monitor.alerts].count("volume") == 1  # deduplicated


def test_a_purpose_never_used_before_by_a_principal(platform: Platform, hook: Hook) -> None:
    platform.audit.append(serve("desk", ["1"], purpose="support"))
    attach_monitors(platform, webhook_url=hook.url)
    platform.audit.append(serve("desk", ["2"], purpose="support"))
    platform.audit.append(serve("newcomer", ["2"], purpose="analytics"))  # no history: no alert
    platform.audit.append(serve("desk", ["3"], purpose="analytics"))
    body = hook.wait_for("new_purpose")
    assert "'analytics'" in body["text"]
    assert body["tidegate"]["principal"] == "desk"
    assert hook.kinds().count("new_purpose") == 1


def test_repeated_denied_requests(platform: Platform, hook: Hook) -> None:
    monitor = attach_monitors(platform, webhook_url=hook.url)
    for _ in range(7):
        platform.audit.append(
            AuditRecord(action="deny", principal="prober", outcome="denied", purpose="analytics")
        )
    body = hook.wait_for("denied")
    assert "prober was denied 5 times" in body["text"]
    assert [a.kind for a in monitor.alerts] == ["denied"]  # the 6th and 7th: deduplicated


def test_reads_of_erased_or_revoked_subjects(platform: Platform, hook: Hook) -> None:
    erase(platform, "5", "dpo")
    # customer 1 revokes now; customer 3 grants now (the demo revoked customer 2's
    # marketing.email 150 days ago, so 2 is not a consenting subject)
    consent_ledger_of(platform).record(
        [
            ConsentEvent("1", "marketing.email", "revoke", time.time(), "t"),
            ConsentEvent("3", "marketing.email", "grant", time.time(), "t"),
        ]
    )
    monitor = attach_monitors(platform, webhook_url=hook.url)
    platform.audit.append(serve("desk", ["5"], outcome="absent"))
    platform.audit.append(serve("crm-app", ["1"], purpose="marketing.email", outcome="filtered"))
    platform.audit.append(serve("crm-app", ["3"], purpose="marketing.email"))  # granted: quiet
    platform.audit.flush()
    # observers run on append; only the webhook posts later, from threads
    keys = sorted(a.key for a in monitor.alerts)
    assert keys == [
        "erased_read:crm-app:1:marketing.email",
        "erased_read:desk:5:support",
    ], keys
    hook.wait_for("erased_read")
    deadline = time.monotonic() + 20
    while len(hook.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    texts = sorted(b["text"] for b in hook.received)
    assert len(texts) == 2, texts
    assert any("is erased" in t for t in texts)
    assert any("without a legal basis for 'marketing.email'" in t for t in texts)


def test_monitors_without_a_platform_learn_baselines_quietly() -> None:
    monitor = AccessMonitor(settings=MonitorSettings(window=10, factor=2, floor=1))
    start = 1_000.0
    monitor.learn(serve("p", [str(i)], at=start + i * 10) for i in range(5))
    assert monitor.alerts == []
    raised = monitor.observe([serve("p", ["a", "b", "c"], at=start + 100)])
    assert [a.kind for a in raised] == ["volume"]


def test_a_process_started_with_the_webhook_setting_monitors_itself(
    demo_copy: Path, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_ACCESS_ALERT_WEBHOOK", hook.url)
    with Platform.open(demo_copy) as platform:
        assert platform.audit.observers == []  # nothing guarded yet
        guard_of(platform)  # every egress path gets its guard here
        guard_of(platform)
        assert len(platform.audit.observers) == 1
        for _ in range(5):
            platform.audit_writer.submit(
                AuditRecord(action="deny", principal="prober", outcome="denied")
            )
        hook.wait_for("denied")
