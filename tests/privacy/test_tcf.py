"""TC strings from the IAB's own test suites decode to the values those suites expect.

Fixtures: the example string of the IAB TCF v2 specification, and the strings of the
IAB Tech Lab's iabtcf-java decoder tests (TCStringV2Test), with their expected values.
"""

from __future__ import annotations

import base64
import datetime as dt
from types import SimpleNamespace

import pytest

from tidegate.errors import BadRequestError
from tidegate.privacy.tcf import PublisherRestriction, VendorSet, choices, decode

SPEC_EXAMPLE = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"
BITFIELDS = "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA"
GVL_SEGMENT = (
    "IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAE"
    "QAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw"
)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_spec_example() -> None:
    tc = decode(SPEC_EXAMPLE)
    assert tc.version == 2
    assert tc.cmp_id == 27
    assert tc.vendor_list_version == 15
    assert tc.policy_version == 2
    assert tc.created == utc("2020-02-20T23:57:39.300000")
    assert tc.consent_language == "EN"
    assert tc.purposes_consent == [1, 2, 3]
    assert list(tc.vendor_consents) == [2, 6, 8]
    assert list(tc.vendor_legitimate_interests) == [2, 6, 8]


def test_core_fields_from_iabtcf_java() -> None:
    tc = decode("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA")
    assert tc.created == utc("2020-01-26T17:01:00")
    assert tc.last_updated == utc("2021-02-02T17:01:00")
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (675, 2, 1)
    assert (tc.vendor_list_version, tc.policy_version) == (15, 2)
    assert (tc.consent_language, tc.publisher_cc) == ("EN", "AA")
    assert not tc.is_service_specific
    assert tc.purpose_one_treatment
    assert not tc.use_non_standard_texts
    assert tc.special_feature_opt_ins == [1]
    assert tc.purposes_consent == [2, 10]
    assert tc.purposes_li_transparency == [2, 9]


def test_bitfield_vendors_and_disclosed_allowed_and_publisher_segments() -> None:
    tc = decode(BITFIELDS)
    assert tc.purposes_consent == [3, 4, 5, 6, 7, 8, 9]
    assert list(tc.vendor_consents) == [23, 37, 47, 48, 53, 65, 98]
    assert list(tc.vendor_legitimate_interests) == [37, 47, 48, 53, 65, 98, 129]
    full = decode(BITFIELDS + ".IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA.cAAAAAAAITg=")
    assert list(full.allowed_vendors) == [12, 23, 37, 47, 48, 53]
    assert list(full.disclosed_vendors) == [23, 37, 47, 48, 53, 65, 98, 129]
    assert len(full.publisher_purposes_consent) == 1


def test_range_encoded_vendors() -> None:
    ranged_li = decode("COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA")
    assert list(ranged_li.vendor_legitimate_interests) == [128]
    two = "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA." + GVL_SEGMENT
    one = "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAQFfgUbABAUaAAA." + GVL_SEGMENT
    assert list(decode(two).vendor_consents) == [702, 703]
    assert list(decode(one).vendor_consents) == [703]


def from_bits(bits: str) -> str:
    padded = bits + "0" * (-len(bits) % 8)
    data = int(padded, 2).to_bytes(len(padded) // 8, "big")
    return base64.urlsafe_b64encode(data).decode()


def test_publisher_restrictions_from_a_bit_string() -> None:
    core = (
        "0000100011101011100" "1000000000000001010" "0000001110101110010" "0000000000000101000"
        "0000110011111000000" "0000000000000000100" "0011010000000011110" "0001000000000000000"
        + "0000000000000000000" * 5
        + "000000000011"  # NumPubRestrictions = 3
        + "000001" "01" "000000000000"  # purpose 1, require consent, no vendors
        + "000010" "00" "000000000000"  # purpose 2, not allowed
        + "000011" "10" "000000000000"  # purpose 3, require legitimate interest
        + "0"
    )  # fmt: skip
    tc = decode(from_bits(core))
    assert tc.publisher_restrictions == [
        PublisherRestriction(1, "require_consent", VendorSet()),
        PublisherRestriction(2, "not_allowed", VendorSet()),
        PublisherRestriction(3, "require_legitimate_interest", VendorSet()),
    ]


def test_publisher_purposes_segment() -> None:
    segment = "011" + "1" + "0" * 23 + "0" * 23 + "1" + "000010" + "01" + "11" + "000"
    tc = decode("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA." + from_bits(segment))
    assert tc.publisher_purposes_consent == [1]
    assert tc.publisher_purposes_li_transparency == [24]
    assert tc.custom_purposes_consent == [2]
    assert tc.custom_purposes_li_transparency == [1, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("!!!", "base64"), ("BOVeoB_OVeoFxC-AHAFRBtAAAAAhGAEAD4AXAA2YCEQ", "version 1"),
     ("COvFyGBO", "too short")],
)  # fmt: skip
def test_bad_strings_are_400s_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        decode(text)


def test_mapping_to_project_purposes() -> None:
    purposes = {
        "marketing.email": SimpleNamespace(legal_basis="consent", tcf_purposes=[1, 3]),
        "analytics": SimpleNamespace(legal_basis="consent", tcf_purposes=[1, 8]),
        "personalisation": SimpleNamespace(legal_basis="legitimate_interest", tcf_purposes=[2]),
        "support": SimpleNamespace(legal_basis="contract", tcf_purposes=[]),
    }
    found = {c.purpose: c.action for c in choices(decode(SPEC_EXAMPLE), purposes)}
    # purposes 1-3 consented, no legitimate-interest bits: consent to TCF purpose 2 is a
    # basis for the legitimate-interest purpose too (it lifts an objection)
    assert found == {"marketing.email": "grant", "analytics": "revoke", "personalisation": "grant"}
    by_vendor = {c.purpose: c.action for c in choices(decode(SPEC_EXAMPLE), purposes, 7)}
    assert by_vendor["marketing.email"] == "revoke"  # vendor 7 has no consent
    assert {c.purpose: c.action for c in choices(decode(SPEC_EXAMPLE), purposes, 6)}[
        "marketing.email"
    ] == "grant"
