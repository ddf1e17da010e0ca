"""Access monitors are on by default and configured in the project (issue 14, item 4):
thresholds per role in tidegate.yml, alerts through the same `observe.alerts` channels as
syncs and quality, no environment variable needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.audit.log import AuditRecord
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.guard import guard_of
from tidegate.privacy.monitors import ENV_WEBHOOK

from .test_monitors import Hook, hook  # noqa: F401  (the local webhook receiver)


def configure(project: Path, observe: str) -> None:
    path = project / "tidegate.yml"
    path.write_text(path.read_text() + "\nobserve:\n" + observe)


def denied(key_id: str, principal: str) -> AuditRecord:
    return AuditRecord(action="serve", principal=principal, outcome="denied",
                       detail={"key_id": key_id})  # fmt: skip


def test_monitors_alert_through_the_project_alert_channel_without_env(
    demo_copy: Path,
    hook: Hook,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_WEBHOOK, raising=False)
    configure(demo_copy, f"  alerts:\n    owners:\n      privacy: {hook.url}\n")
    with Platform.open(demo_copy) as platform:
        guard_of(platform)
        assert len(platform.audit.observers) == 1
        for _ in range(5):
            platform.audit_writer.submit(
                AuditRecord(action="deny", principal="prober", outcome="denied")
            )
        hook.wait_for("denied")


def test_thresholds_per_role(demo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_WEBHOOK, raising=False)
    configure(
        demo_copy,
        "  access_monitors:\n    denied_threshold: 3\n"
        "    roles:\n      support_agent: {denied_threshold: 50}\n",
    )
    with Platform.open(demo_copy) as platform:
        _, agent = create_key(platform.meta, "desk", ["support_agent"])
        _, other = create_key(platform.meta, "tool", ["analyst"])
        guard_of(platform)
        platform.audit.append(*(denied(agent.key_id, "desk") for _ in range(10)))
        platform.audit.append(*(denied(other.key_id, "tool") for _ in range(3)))
        from tidegate.privacy.monitors import AccessMonitor

        (observer,) = platform.audit.observers
        monitor = next(
            c.cell_contents
            for c in observer.__closure__ or ()
            if isinstance(c.cell_contents, AccessMonitor)
        )
        assert {a.principal for a in monitor.alerts if a.kind == "denied"} == {"tool"}


def test_monitors_can_be_turned_off(demo_copy: Path) -> None:
    configure(demo_copy, "  access_monitors: {enabled: false}\n")
    with Platform.open(demo_copy) as platform:
        guard_of(platform)
        assert platform.audit.observers == []
