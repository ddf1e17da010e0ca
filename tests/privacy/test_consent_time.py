"""Consent time means what the person did: a choice dated in the future (beyond the
clock-skew allowance) is refused on every way in, and a TCF string's day-rounded time is
ordered by when tidegate received it within that day, so a same-day "reject all" after a
grant is a revocation (issue 14, item 1)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.errors import BadRequestError
from tidegate.platform import Platform
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of, consent_view_of
from tidegate.privacy.consent_input import ConsentBody, Rejected, consent_events, parse

from .tcfgen import Core, day_of
from .test_consent_api import Api, serve

YEAR_2100 = 4_102_444_800.0
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


@pytest.fixture
def api(shop: Path) -> Iterator[Api]:
    yield from serve(shop)


@pytest.fixture
def platform(shop: Path) -> Iterator[Platform]:
    with Platform.open(shop) as opened:
        yield opened


def test_api_refuses_a_grant_dated_2100_naming_the_field(api: Api) -> None:
    body = {"subject": "900", "occurred_at": "2100-01-01T00:00:00Z",
            "choices": [{"purpose": "marketing.email", "action": "grant"}]}  # fmt: skip
    response = api.post(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == "occurred_at"
    assert "future" in error["message"]
    assert consent_ledger_of(api.platform).history("900") == []
    # the 2100 grant would have beaten this later revocation; refused, it cannot
    revoke = {"subject": "900", "choices": [{"purpose": "marketing.email", "action": "revoke"}]}
    assert api.post(revoke).json()["allowed"]["marketing.email"] is False


def test_a_tcf_string_last_updated_in_the_future_is_refused(api: Api) -> None:
    future = Core(last_updated=day_of(time.time()) + 3 * 86400, purposes_consent=[1, 3]).encode()
    response = api.post({"subject": "901", "tcf": future})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == "tcf"


def test_clock_skew_allowance_is_configurable(platform: Platform) -> None:
    purposes = platform.project.policy.purposes
    soon = ConsentBody(subject="1", occurred_at=time.time() + 120,
                       choices=[{"purpose": "support", "action": "object"}])  # type: ignore[list-item]  # fmt: skip
    assert consent_events(purposes, soon, False)  # 2 minutes ahead: within the default 5
    with pytest.raises(BadRequestError, match="future") as err:
        consent_events(purposes, soon, False, clock_skew=60)
    assert err.value.details["field"] == "occurred_at"


def test_the_ledger_itself_refuses_future_events(platform: Platform) -> None:
    event = ConsentEvent("1", "support", "grant", YEAR_2100, "cli")
    with pytest.raises(BadRequestError, match="future"):
        consent_ledger_of(platform).record([event])
    assert consent_ledger_of(platform).history("1") == [] or all(
        h.occurred_at < YEAR_2100 for h in consent_ledger_of(platform).history("1")
    )


def test_topic_message_dated_in_the_future_is_a_dead_letter_with_the_reason(
    platform: Platform,
) -> None:
    message = b'{"subject":"1","purpose":"support","action":"object","occurred_at":4102444800}'
    with pytest.raises(Rejected, match=r"occurred_at.*future"):
        parse(message, platform.project.policy.purposes, time.time())


def test_cli_refuses_a_future_time_with_exit_2(shop: Path) -> None:
    done = subprocess.run(
        [TIDEGATE, "consent", "grant", "1", "analytics", "--project", str(shop),
         "--occurred-at", "2100-01-01T00:00:00Z"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "future" in done.stderr
    assert "Traceback" not in done.stderr


def test_same_day_reject_all_after_a_grant_is_a_revocation(platform: Platform) -> None:
    """The grant at 10:00 is precise; the TCF string that rejects everything is stamped
    00:00 of the same day by the CMP's encoder but arrived at 14:00: it is the later one."""
    purposes = platform.project.policy.purposes
    day = day_of(time.time()) - 86400  # yesterday, so nothing here is in the future
    grant = ConsentBody(subject="42", occurred_at=day + 10 * 3600,
                        choices=[{"purpose": "marketing.email", "action": "grant"}])  # type: ignore[list-item]  # fmt: skip
    reject_all = ConsentBody(subject="42", tcf=Core(last_updated=day).encode())
    ledger, view = consent_ledger_of(platform), consent_view_of(platform)
    ledger.record(consent_events(purposes, grant, False, received_at=day + 10 * 3600))
    recorded = consent_events(purposes, reject_all, False, received_at=day + 14 * 3600)
    assert {e.purpose: e.action for e in recorded}["marketing.email"] == "revoke"
    assert {e.occurred_at for e in recorded} == {day + 14 * 3600}  # its day, at receipt
    ledger.record(recorded)
    view.refresh()
    assert view.allowed("42", "marketing.email", "consent") is False


def test_a_coarse_event_received_days_later_stays_in_its_own_day(platform: Platform) -> None:
    """Received three days after its day, a string is placed at the end of that day: after
    that day's precise choices, before the next day's."""
    purposes = platform.project.policy.purposes
    day = day_of(time.time()) - 5 * 86400
    late = ConsentBody(subject="43", tcf=Core(last_updated=day, purposes_consent=[1, 3]).encode())
    (event, *_) = consent_events(purposes, late, False, received_at=day + 3 * 86400 + 5)
    assert day + 23 * 3600 < event.occurred_at < day + 86400


def test_same_day_over_the_api_with_the_real_clock(api: Api) -> None:
    grant = {"subject": "44", "choices": [{"purpose": "marketing.email", "action": "grant"}]}
    assert api.post(grant).json()["allowed"]["marketing.email"] is True
    reject_all = Core(last_updated=day_of(time.time())).encode()
    response = api.post({"subject": "44", "tcf": reject_all})
    assert response.status_code == 200, response.text
    assert response.json()["allowed"]["marketing.email"] is False
