"""IAB TCF v2 (v2.0 to v2.2) TC strings: decode them, and turn them into ledger events.

A TC string is `core[.segment]*`, each part web-safe base64 of a bit stream. The core
segment (IAB Tech Lab, "Consent string and vendor list formats v2"):

    Version 6 · Created 36 (deciseconds) · LastUpdated 36 · CmpId 12 · CmpVersion 12 ·
    ConsentScreen 6 · ConsentLanguage 12 · VendorListVersion 12 · TcfPolicyVersion 6 ·
    IsServiceSpecific 1 · UseNonStandardTexts 1 · SpecialFeatureOptIns 12 ·
    PurposesConsent 24 · PurposesLITransparency 24 · PurposeOneTreatment 1 ·
    PublisherCC 12 · vendor consents · vendor legitimate interests · publisher restrictions

Vendor sections are `MaxVendorId 16 · IsRangeEncoding 1` then a bit field of MaxVendorId
bits, or `NumEntries 12` range entries (`IsARange 1 · Start 16 · [End 16]`). Optional
segments start with a 3-bit type: 1 disclosed vendors, 2 allowed vendors, 3 publisher
purposes.

Vendor sets are kept as sorted, merged ranges (`VendorSet`): a range entry may span all
65,535 ids and a string may hold thousands of them, so expanding them would cost
gigabytes; membership of one vendor is a binary search. Strings longer than
`MAX_LENGTH` characters are refused.

Mapping to project purposes (`choices`): a purpose lists the TCF purposes it rests on
(`tcf_purposes: [1, 7]` in policies); the project's `tcf:` policy (`TcfPolicy`) names
our vendor id. A listed TCF purpose is satisfied under the purpose's basis:

* `consent`: the TCF purpose has consent and, with a vendor id and
  `require_vendor_consent`, so does the vendor;
* `legitimate_interest`: the TCF purpose has legitimate-interest transparency (and the
  vendor legitimate interest), or consent (and the vendor consent): a later string that
  consents lifts an earlier objection;
* publisher restrictions naming our vendor override that: `not_allowed` satisfies
  nothing, `require_consent` allows only the consent route, `require_legitimate_interest`
  only the legitimate-interest one (so a `consent` purpose cannot rest on it);
* PurposeOneTreatment set means purpose 1 was not asked; it is satisfied only when the
  publisher's country is in `purpose_one_waived_in`, as the TCF policy leaves that to the
  publisher country's law.

Every listed TCF purpose satisfied: `grant` (which also lifts an earlier objection);
otherwise `revoke` for a consent purpose and `object` for a legitimate-interest one.
The event's time is the string's LastUpdated, a day-rounded time that
`privacy/consent.coarse_moment` places at its receipt within that day.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidegate.errors import BadRequestError
from tidegate.project.models import TcfPolicy

RESTRICTION_TYPES = {0: "not_allowed", 1: "require_consent", 2: "require_legitimate_interest"}
#: the longest TC string taken (a full 65,535-vendor bit field is about 11,000 characters
#: with both vendor sections; CMPs send range encoding for long lists)
MAX_LENGTH = 10_000


@dataclass(frozen=True)
class VendorSet:
    """Vendor ids as sorted, disjoint, inclusive ranges; `in` without expanding them."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, spans: list[tuple[int, int]]) -> VendorSet:
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return cls(tuple(merged))

    def __contains__(self, vendor: object) -> bool:
        if not isinstance(vendor, int):
            return False
        at = bisect.bisect_right(self.ranges, (vendor, 1 << 30)) - 1
        return at >= 0 and self.ranges[at][0] <= vendor <= self.ranges[at][1]

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)


@dataclass(frozen=True)
class PublisherRestriction:
    purpose: int
    restriction: str
    vendors: VendorSet


@dataclass
class TCString:
    version: int
    created: dt.datetime
    last_updated: dt.datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_opt_ins: list[int]
    purposes_consent: list[int]
    purposes_li_transparency: list[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorSet
    vendor_legitimate_interests: VendorSet
    publisher_restrictions: list[PublisherRestriction] = field(default_factory=list)
    disclosed_vendors: VendorSet = field(default_factory=VendorSet)
    allowed_vendors: VendorSet = field(default_factory=VendorSet)
    publisher_purposes_consent: list[int] = field(default_factory=list)
    publisher_purposes_li_transparency: list[int] = field(default_factory=list)
    custom_purposes_consent: list[int] = field(default_factory=list)
    custom_purposes_li_transparency: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["created"] = self.created.isoformat()
        data["last_updated"] = self.last_updated.isoformat()
        for name, value in data.items():
            if isinstance(value, VendorSet):  # as ranges: a full set is 65,535 ids
                data[name] = [list(span) for span in value.ranges]
        data["publisher_restrictions"] = [
            {
                "purpose": r.purpose,
                "restriction": r.restriction,
                "vendors": [list(span) for span in r.vendors.ranges],
            }
            for r in self.publisher_restrictions
        ]
        return data


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big") if data else 0
        self.length = len(data) * 8
        self.pos = 0

    def read(self, width: int) -> int:
        if self.pos + width > self.length:
            raise BadRequestError(
                f"TC string too short: needs bit {self.pos + width}, has {self.length}"
            )
        shift = self.length - self.pos - width
        self.pos += width
        return (self.value >> shift) & ((1 << width) - 1)

    def flag(self) -> bool:
        return self.read(1) == 1

    def bitfield(self, width: int) -> list[int]:
        """The 1-based positions of set bits in the next `width` bits."""
        bits = self.read(width) if width else 0
        return [i + 1 for i in range(width) if bits >> (width - 1 - i) & 1]

    def letters(self) -> str:
        return chr(ord("A") + self.read(6)) + chr(ord("A") + self.read(6))

    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.read(36) / 10, dt.UTC)

    def ranges(self, max_id: int = 65535) -> VendorSet:
        """`NumEntries 12` range entries, kept as ranges (clipped to `max_id`)."""
        spans: list[tuple[int, int]] = []
        for _ in range(self.read(12)):
            is_range = self.flag()
            start = self.read(16)
            end = self.read(16) if is_range else start
            if end < start:
                raise BadRequestError(f"TC string: bad vendor range {start}-{end}")
            if start <= max_id:
                spans.append((start, min(end, max_id)))
        return VendorSet.of(spans)

    def vendor_bits(self, width: int) -> VendorSet:
        """A bit field of `width` vendors, as the ranges of its runs of set bits."""
        bits = self.read(width) if width else 0
        text = format(bits, f"0{width}b") if width else ""
        return VendorSet(tuple((m.start() + 1, m.end()) for m in re.finditer("1+", text)))

    def vendors(self) -> VendorSet:
        max_id = self.read(16)
        if self.flag():
            return self.ranges(max_id)
        return self.vendor_bits(max_id)


def _segment_bytes(text: str) -> bytes:
    clean = text.strip().rstrip("=")
    try:
        padded = clean + "=" * (-len(clean) % 4)
        return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise BadRequestError("TC string: a segment is not web-safe base64") from None


def decode(tc_string: str) -> TCString:
    """Decode a TC string; BadRequestError (400) with a reason when it is not one."""
    if not tc_string:
        raise BadRequestError("TC string is empty", field="tcf")
    if len(tc_string) > MAX_LENGTH:
        raise BadRequestError(
            f"TC string too long: {len(tc_string)} characters, at most {MAX_LENGTH}", field="tcf"
        )
    parts = tc_string.strip().split(".")
    bits = _Bits(_segment_bytes(parts[0]))
    version = bits.read(6)
    if version != 2:
        raise BadRequestError(f"TC string version {version} is not supported (only v2)")
    core = TCString(
        version=version,
        created=bits.time(),
        last_updated=bits.time(),
        cmp_id=bits.read(12),
        cmp_version=bits.read(12),
        consent_screen=bits.read(6),
        consent_language=bits.letters(),
        vendor_list_version=bits.read(12),
        policy_version=bits.read(6),
        is_service_specific=bits.flag(),
        use_non_standard_texts=bits.flag(),
        special_feature_opt_ins=bits.bitfield(12),
        purposes_consent=bits.bitfield(24),
        purposes_li_transparency=bits.bitfield(24),
        purpose_one_treatment=bits.flag(),
        publisher_cc=bits.letters(),
        vendor_consents=bits.vendors(),
        vendor_legitimate_interests=bits.vendors(),
    )
    if bits.length - bits.pos >= 12:
        for _ in range(bits.read(12)):
            purpose = bits.read(6)
            kind = bits.read(2)
            core.publisher_restrictions.append(
                PublisherRestriction(
                    purpose, RESTRICTION_TYPES.get(kind, f"undefined_{kind}"), bits.ranges()
                )
            )
    for part in parts[1:]:
        if not part:
            continue
        seg = _Bits(_segment_bytes(part))
        kind = seg.read(3)
        if kind == 1:
            core.disclosed_vendors = seg.vendors()
        elif kind == 2:
            core.allowed_vendors = seg.vendors()
        elif kind == 3:
            core.publisher_purposes_consent = seg.bitfield(24)
            core.publisher_purposes_li_transparency = seg.bitfield(24)
            custom = seg.read(6)
            core.custom_purposes_consent = seg.bitfield(custom)
            core.custom_purposes_li_transparency = seg.bitfield(custom)
        # other segment types are ignored, as the spec asks of unknown segments
    return core


@dataclass(frozen=True)
class TcfChoice:
    purpose: str
    action: str  # grant | revoke | object
    reason: str


def _restrictions(tc: TCString, vendor_id: int | None) -> dict[int, str]:
    """TCF purpose -> the publisher's restriction on our vendor (`not_allowed` wins)."""
    found: dict[int, str] = {}
    if vendor_id is None:
        return found
    for restriction in tc.publisher_restrictions:
        if vendor_id in restriction.vendors and found.get(restriction.purpose) != "not_allowed":
            found[restriction.purpose] = restriction.restriction
    return found


def _unmet(
    tc: TCString,
    purpose: int,
    basis: str,
    vendor_id: int | None,
    policy: TcfPolicy,
    restricted: dict[int, str],
) -> str | None:
    """Why TCF `purpose` gives no basis for a purpose resting on `basis`, or None."""
    check_vendor = vendor_id is not None and policy.require_vendor_consent
    if purpose == 1 and tc.purpose_one_treatment:
        if tc.publisher_cc in policy.purpose_one_waived_in:
            return None
        return (
            f"TCF purpose 1 was not asked (PurposeOneTreatment, publisher country "
            f"{tc.publisher_cc}, not in tcf.purpose_one_waived_in)"
        )
    restriction = restricted.get(purpose)
    if restriction == "not_allowed":
        return f"the publisher does not allow vendor {vendor_id} TCF purpose {purpose}"
    consent_ok = purpose in tc.purposes_consent and (
        not check_vendor or vendor_id in tc.vendor_consents
    )
    li_ok = purpose in tc.purposes_li_transparency and (
        not check_vendor or vendor_id in tc.vendor_legitimate_interests
    )
    if basis == "consent" or restriction == "require_consent":
        if restriction == "require_legitimate_interest":
            return (
                f"the publisher requires legitimate interest for TCF purpose {purpose}; "
                "this purpose rests on consent"
            )
        if consent_ok:
            return None
        if purpose not in tc.purposes_consent:
            return f"TCF purpose {purpose} not consented"
        return f"vendor {vendor_id} has no consent"
    if restriction == "require_legitimate_interest":
        return None if li_ok else f"no legitimate interest for TCF purpose {purpose}"
    if li_ok or consent_ok:
        return None
    return f"legitimate interest refused for TCF purpose {purpose}"


def choices(
    tc: TCString,
    purposes: dict[str, Any],
    vendor_id: int | None = None,
    *,
    policy: TcfPolicy | None = None,
) -> list[TcfChoice]:
    """What the string says about each project purpose that lists `tcf_purposes`:
    `grant` when every listed TCF purpose is satisfied, else `revoke` (consent) or
    `object` (legitimate interest). See the module docstring for the rules."""
    rules = policy or TcfPolicy()
    vendor = vendor_id if vendor_id is not None else rules.vendor_id
    restricted = _restrictions(tc, vendor)
    found: list[TcfChoice] = []
    for name, config in purposes.items():
        listed = list(getattr(config, "tcf_purposes", []) or [])
        basis = config.legal_basis
        if not listed or basis not in ("consent", "legitimate_interest"):
            continue
        reasons = [why for p in listed if (why := _unmet(tc, p, basis, vendor, rules, restricted))]
        if not reasons:
            found.append(TcfChoice(name, "grant", f"TCF purposes {listed} satisfied"))
        else:
            refusal = "revoke" if basis == "consent" else "object"
            found.append(TcfChoice(name, refusal, "; ".join(reasons)))
    return found
