"""TCF strings mean what the IAB policy says (issue 14, item 2): a later string that
consents lifts an earlier objection; the publisher's restrictions on our vendor are
honoured; PurposeOneTreatment and vendor consent follow the project's `tcf:` policy; and a
maximal string decodes in little memory and time."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

from tidegate.errors import BadRequestError
from tidegate.meta.sqlite import SqliteMetadataStore
from tidegate.privacy.consent import ConsentLedger, ConsentView
from tidegate.privacy.consent_input import ConsentBody, consent_events
from tidegate.privacy.tcf import MAX_LENGTH, choices, decode
from tidegate.project.models import TcfPolicy

from .tcfgen import Core

US = 42
PURPOSES = {
    "marketing.email": SimpleNamespace(legal_basis="consent", tcf_purposes=[1, 3]),
    "personalisation": SimpleNamespace(legal_basis="legitimate_interest", tcf_purposes=[2]),
}
POLICY = TcfPolicy(vendor_id=US)


def actions(core: Core, policy: TcfPolicy = POLICY) -> dict[str, str]:
    return {c.purpose: c.action for c in choices(decode(core.encode()), PURPOSES, policy=policy)}


def test_a_later_string_that_consents_lifts_an_earlier_objection(tmp_path: Path) -> None:
    meta = SqliteMetadataStore(tmp_path / "m.db")
    try:
        ledger, view = ConsentLedger(meta), ConsentView(meta)
        day = time.time() - time.time() % 86400 - 2 * 86400
        objecting = Core(last_updated=day, purposes_consent=[1, 3], vendor_consents=[US])
        lifting = Core(last_updated=day + 86400, purposes_li=[2], vendor_li=[US])
        for core, received in ((objecting, day + 3600), (lifting, day + 86400 + 3600)):
            body = ConsentBody(subject="7", tcf=core.encode())
            ledger.record(
                consent_events(PURPOSES, body, False, tcf_policy=POLICY, received_at=received)  # type: ignore[arg-type]
            )
            view.refresh()
            if core is objecting:
                assert not view.allowed("7", "personalisation", "legitimate_interest")
        assert view.allowed("7", "personalisation", "legitimate_interest")
    finally:
        meta.close()


def test_consent_to_the_tcf_purpose_also_lifts_an_objection() -> None:
    assert actions(Core(purposes_consent=[2], vendor_consents=[US]))["personalisation"] == "grant"


@pytest.mark.parametrize(
    ("restriction", "email", "personalisation"),
    [
        ((3, 0, [(40, 50)]), "revoke", "grant"),  # not allowed on 3: only email rests on it
        ((2, 0, [(US, US)]), "grant", "object"),  # not allowed on 2: personalisation
        ((3, 0, [(1, 10)]), "grant", "grant"),  # another vendor restricted: no effect
        ((2, 1, [(US, US)]), "grant", "object"),  # require consent: LI bit is not enough
        ((3, 2, [(US, US)]), "revoke", "grant"),  # require LI: consent purpose cannot rest on it
    ],
)
def test_publisher_restrictions_on_our_vendor_are_honoured(
    restriction: tuple[int, int, list[tuple[int, int]]], email: str, personalisation: str
) -> None:
    core = Core(
        purposes_consent=[1, 3], purposes_li=[2], vendor_consents=[US], vendor_li=[US],
        restrictions=[restriction],
    )  # fmt: skip
    found = actions(core)
    assert found == {"marketing.email": email, "personalisation": personalisation}


def test_restriction_reason_is_recorded() -> None:
    tc = decode(Core(purposes_consent=[1, 3], vendor_consents=[US],
                     restrictions=[(3, 0, [(US, US)])]).encode())  # fmt: skip
    (email, _) = choices(tc, PURPOSES, policy=POLICY)
    assert "does not allow vendor 42 TCF purpose 3" in email.reason


def test_purpose_one_treatment_follows_the_publisher_country_policy() -> None:
    core = Core(purposes_consent=[3], vendor_consents=[US], purpose_one_treatment=True,
                publisher_cc="DE")  # fmt: skip
    assert actions(core)["marketing.email"] == "revoke"  # purpose 1 never asked: no consent
    waived = TcfPolicy(vendor_id=US, purpose_one_waived_in=["DE"])
    assert actions(core, waived)["marketing.email"] == "grant"
    core.publisher_cc = "FR"
    assert actions(core, waived)["marketing.email"] == "revoke"


def test_the_configured_vendor_needs_consent_without_the_caller_naming_it() -> None:
    no_vendor = Core(purposes_consent=[1, 3], vendor_consents=[7])
    assert actions(no_vendor)["marketing.email"] == "revoke"  # vendor 42 from the policy
    relaxed = TcfPolicy(vendor_id=US, require_vendor_consent=False)
    assert actions(no_vendor, relaxed)["marketing.email"] == "grant"


def test_a_caller_cannot_swap_in_another_vendor_id() -> None:
    body = ConsentBody(subject="1", tcf=Core(purposes_consent=[1, 3]).encode(), tcf_vendor=7)
    with pytest.raises(BadRequestError, match="vendor id 42") as err:
        consent_events(PURPOSES, body, False, tcf_policy=POLICY)  # type: ignore[arg-type]
    assert err.value.details["field"] == "tcf_vendor"


def maximal_string() -> str:
    """As many full-width vendor ranges as fit in MAX_LENGTH characters: each one names
    all 65,535 vendors; expanded, they would be hundreds of millions of ids."""
    full = [(1, 65535)] * 780
    core = Core(purposes_consent=[1, 3], vendor_consent_ranges=full, vendor_li_ranges=full,
                restrictions=[(p, 1, [(1, 65535)] * 100) for p in (2, 4)])  # fmt: skip
    text = core.encode()
    assert 0.8 * MAX_LENGTH < len(text) <= MAX_LENGTH
    return text


def test_a_maximal_string_decodes_in_little_memory_and_time() -> None:
    text = maximal_string()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        tc = decode(text)
        found = choices(tc, PURPOSES, policy=POLICY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started
    assert US in tc.vendor_consents
    assert 65535 in tc.vendor_legitimate_interests
    assert len(tc.vendor_consents) == 65535
    assert {c.purpose: c.action for c in found}["marketing.email"] == "grant"
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert seconds < 1.0


def test_an_oversized_string_is_a_400_naming_the_field() -> None:
    with pytest.raises(BadRequestError, match="too long") as err:
        decode("C" * (MAX_LENGTH + 1))
    assert err.value.http_status == 400
    assert err.value.details["field"] == "tcf"
