"""Consent histories as the person lived them (hypothesis): choices received out of order,
TCF strings whose time is only a day, choices dated in the future; and TCF strings with
random publisher restrictions. The expected state is computed here from the rules as the
issue states them, never by asking the code under test."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.errors import BadRequestError
from tidegate.meta.sqlite import SqliteMetadataStore
from tidegate.privacy.consent import ConsentLedger, ConsentView
from tidegate.privacy.consent_input import ConsentBody, consent_events
from tidegate.privacy.tcf import choices, decode
from tidegate.project.models import TcfPolicy

from .tcfgen import Core

US = 42
DAY = 86400.0
SKEW = 300.0
PURPOSES = {
    "marketing.email": SimpleNamespace(legal_basis="consent", tcf_purposes=[1, 3]),
    "personalisation": SimpleNamespace(legal_basis="legitimate_interest", tcf_purposes=[2]),
}
POLICY = TcfPolicy(vendor_id=US)
BASE = (time.time() // DAY - 40) * DAY  # 40 days ago, midnight UTC: all of it is past


@dataclass(frozen=True)
class Step:
    kind: str  # precise | tcf | future
    grant: bool
    gap: float  # seconds since the previous receipt
    lag: float  # how long before its receipt the person chose (tcf: whole days of it)


steps = st.builds(
    Step,
    kind=st.sampled_from(("precise", "precise", "tcf", "tcf", "future")),
    grant=st.booleans(),
    gap=st.sampled_from([1.0, 60.0, 3600.0, 5 * 3600.0, DAY]),
    lag=st.sampled_from([0.0, 0.0, 30.0, 7200.0, DAY, 2 * DAY]),
)


def expected(history: list[tuple[Step, float]]) -> bool:
    """Granted per the issue: future-dated choices never count; a precise choice is at its
    own time; a TCF string is at its receipt if that is within its day, else at the very
    end of its day; equal times keep arrival order; the latest one decides."""
    timeline: list[tuple[float, int, bool]] = []
    for order, (step, received) in enumerate(history):
        if step.kind == "future":
            continue
        if step.kind == "precise":
            timeline.append((received - step.lag, order, step.grant))
        else:
            day = (received - step.lag // DAY * DAY) // DAY * DAY
            at = received if day <= received < day + DAY else day + DAY - 0.001
            timeline.append((at, order, step.grant))
    return max(timeline)[2] if timeline else False


def body_for(step: Step, received: float) -> ConsentBody:
    if step.kind == "tcf":
        stamp = (received - step.lag // DAY * DAY) // DAY * DAY
        consents = [1, 3] if step.grant else []
        return ConsentBody(
            subject="s", tcf=Core(last_updated=stamp, purposes_consent=consents,
                                  vendor_consents=[US]).encode(),
        )  # fmt: skip
    action = "grant" if step.grant else "revoke"
    at = received - step.lag if step.kind == "precise" else received + SKEW + 1 + step.lag
    return ConsentBody(
        subject="s",
        occurred_at=at,
        choices=[{"purpose": "marketing.email", "action": action}],  # type: ignore[list-item]
    )


@settings(max_examples=80, deadline=None)
@given(history=st.lists(steps, min_size=1, max_size=8))
def test_state_follows_the_time_rules(history: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        meta = SqliteMetadataStore(Path(tmp) / "m.db")
        try:
            ledger, view = ConsentLedger(meta), ConsentView(meta)
            received, lived = BASE, []
            for step in history:
                received += step.gap
                body = body_for(step, received)
                if step.kind == "future":
                    with pytest.raises(BadRequestError, match="future"):
                        consent_events(PURPOSES, body, False, received_at=received)  # type: ignore[arg-type]
                else:
                    events = consent_events(
                        PURPOSES,
                        body,
                        False,
                        tcf_policy=POLICY,
                        received_at=received,  # type: ignore[arg-type]
                    )
                    ledger.record(e for e in events if e.purpose == "marketing.email")
                lived.append((step, received))
            view.refresh()
            assert view.allowed("s", "marketing.email", "consent") is expected(lived)
        finally:
            meta.close()


KINDS = {0: "not_allowed", 1: "require_consent", 2: "require_legitimate_interest"}
vendor_sets = st.lists(st.sampled_from([7, US, 43, 500]), max_size=3, unique=True).map(sorted)
restriction = st.tuples(
    st.integers(1, 4),
    st.integers(0, 2),
    st.lists(st.sampled_from([(1, 10), (40, 45), (US, US), (43, 60000)]), max_size=2),
)


def route_ok(tcf_purpose: int, basis: str, core: Core, on_us: dict[int, str]) -> bool:
    consent = tcf_purpose in core.purposes_consent and US in core.vendor_consents
    li = tcf_purpose in core.purposes_li and US in core.vendor_li
    rule = on_us.get(tcf_purpose)
    if rule == "not_allowed":
        return False
    if rule == "require_consent":
        return consent
    if rule == "require_legitimate_interest":
        return li and basis != "consent"
    return consent if basis == "consent" else (consent or li)


@settings(max_examples=200, deadline=None)
@given(
    consented=st.lists(st.integers(1, 4), max_size=4, unique=True),
    li=st.lists(st.integers(1, 4), max_size=4, unique=True),
    vendor_consents=vendor_sets,
    vendor_li=vendor_sets,
    restrictions=st.lists(restriction, max_size=4),
)
def test_tcf_strings_with_publisher_restrictions(
    consented: list[int],
    li: list[int],
    vendor_consents: list[int],
    vendor_li: list[int],
    restrictions: list[tuple[int, int, list[tuple[int, int]]]],
) -> None:
    core = Core(purposes_consent=sorted(consented), purposes_li=sorted(li),
                vendor_consents=vendor_consents, vendor_li=vendor_li,
                restrictions=restrictions)  # fmt: skip
    on_us: dict[int, str] = {}
    for purpose, kind, spans in restrictions:
        if any(a <= US <= b for a, b in spans) and on_us.get(purpose) != "not_allowed":
            on_us[purpose] = KINDS[kind]
    found = {c.purpose: c.action for c in choices(decode(core.encode()), PURPOSES, policy=POLICY)}
    email = all(route_ok(p, "consent", core, on_us) for p in (1, 3))
    personal = route_ok(2, "legitimate_interest", core, on_us)
    assert found == {
        "marketing.email": "grant" if email else "revoke",
        "personalisation": "grant" if personal else "object",
    }
