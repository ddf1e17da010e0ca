"""Policies reload live in a serving process (issue 19 item 7), in process: a valid edit
applies to the very next request, a broken one is refused with its problems and the old
policy stays, each switch is audited with the digest of the new policy files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.errors import ConfigError
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.policy_reload import POLL_ENV, reloader_of
from tidegate.project.policies import policy_digest

ENTITY = "/v1/products/customer_360/entities/1"
Served = tuple[Platform, TestClient, str]


def _purposes(root: Path) -> Path:
    return root / "policies" / "purposes.yml"


def _edit(root: Path, old: str, new: str) -> None:
    path = _purposes(root)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# support_agent loses the support purpose
DENY = ("    purposes: [support]\n", "    purposes: [analytics]\n")
# an unknown key under a role: refused, naming the file and the field
BROKEN = ("    purposes: [support]\n", "    purposes: [support]\n    purpozes: [x]\n")


def _reloads(platform: Platform, after: int) -> list[AuditRecord]:
    platform.audit.flush()
    return [r for _, r in platform.audit.records(after) if r.action == "policy_reload"]


@pytest.fixture
def served(
    demo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Platform, TestClient, str]]:
    monkeypatch.setenv(POLL_ENV, "0.1")
    platform = Platform.open(demo_copy)
    token = create_key(platform.meta, "desk", ["support_agent"])[0]
    try:
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            yield platform, client, token
    finally:
        platform.close()


def _status(client: TestClient, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "support"}
    return client.get(ENTITY, headers=headers).status_code


def test_a_valid_edit_applies_to_the_next_request_and_is_audited(
    served: Served,
) -> None:
    platform, client, token = served
    root = platform.project.root
    before = platform.project.policy.digest
    assert before == policy_digest(root)
    assert _status(client, token) == 200  # a plan is cached now
    seq = platform.audit.last_seq()
    _edit(root, *DENY)
    result = reloader_of(platform).reload(principal="cli")
    assert result.changed
    assert result.digest == policy_digest(root) != before
    assert _status(client, token) == 403  # the cached plan did not outlive the switch
    (record,) = _reloads(platform, seq)
    assert record.principal == "cli"
    assert record.outcome == "allowed"
    assert record.detail["digest"] == result.digest
    assert record.detail["previous"] == before
    # nothing changed: nothing switched, nothing audited
    assert not reloader_of(platform).reload().changed
    assert len(_reloads(platform, seq)) == 1


def test_a_broken_edit_is_refused_and_the_old_policy_stays(
    served: Served,
) -> None:
    platform, client, token = served
    root = platform.project.root
    before = platform.project.policy
    seq = platform.audit.last_seq()
    _edit(root, *BROKEN)
    with pytest.raises(ConfigError) as refused:
        reloader_of(platform).reload()
    assert "policies/purposes.yml" in str(refused.value)
    assert "purpozes" in str(refused.value)
    assert platform.project.policy is before
    assert _status(client, token) == 200
    with pytest.raises(ConfigError):
        reloader_of(platform).reload()  # asked again: refused again, audited once
    (record,) = _reloads(platform, seq)
    assert record.outcome == "refused"
    assert record.detail["digest"] == policy_digest(root)
    assert record.detail["in_force"] == before.digest
    assert any("purpozes" in p for p in record.detail["problems"])


def test_a_policy_that_breaks_a_product_or_sync_is_refused(
    served: Served,
) -> None:
    """Cross-file checks run against the project in memory: the CRM sync's purpose cannot
    disappear under it."""
    platform, _, _ = served
    path = _purposes(platform.project.root)
    text = path.read_text()
    start = text.index("  marketing.email:\n")
    end = text.index("  analytics:\n")
    path.write_text((text[:start] + text[end:]).replace("marketing.email", "analytics"))
    with pytest.raises(ConfigError) as refused:
        reloader_of(platform).reload()
    assert "syncs/crm_audience.yml:7: [purpose] undefined purpose 'marketing.email'" in str(
        refused.value
    )
    assert "marketing.email" in platform.project.policy.purposes


def test_the_serving_app_watches_the_files(served: Served) -> None:
    platform, client, token = served
    assert _status(client, token) == 200
    _edit(platform.project.root, *DENY)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _status(client, token) == 200:
        time.sleep(0.1)
    assert _status(client, token) == 403
    records = _reloads(platform, 0)
    assert [r.detail["trigger"] for r in records] == ["watch"]
