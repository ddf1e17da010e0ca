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

Mapping to project purposes: a purpose lists the TCF purposes it rests on
(`tcf_purposes: [1, 7]` in policies). For a `consent` purpose the string grants it when
every listed TCF purpose has consent (and, when a vendor id is given, that vendor has
consent too), and revokes it otherwise; for a `legitimate_interest` purpose a missing
legitimate-interest bit is an objection. The event's time is the string's LastUpdated:
when the person made the choice.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tidegate.errors import BadRequestError

RESTRICTION_TYPES = {0: "not_allowed", 1: "require_consent", 2: "require_legitimate_interest"}


@dataclass(frozen=True)
class PublisherRestriction:
    purpose: int
    restriction: str
    vendors: tuple[int, ...]


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
    vendor_consents: list[int]
    vendor_legitimate_interests: list[int]
    publisher_restrictions: list[PublisherRestriction] = field(default_factory=list)
    disclosed_vendors: list[int] = field(default_factory=list)
    allowed_vendors: list[int] = field(default_factory=list)
    publisher_purposes_consent: list[int] = field(default_factory=list)
    publisher_purposes_li_transparency: list[int] = field(default_factory=list)
    custom_purposes_consent: list[int] = field(default_factory=list)
    custom_purposes_li_transparency: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["created"] = self.created.isoformat()
        data["last_updated"] = self.last_updated.isoformat()
        data["publisher_restrictions"] = [r.__dict__ for r in self.publisher_restrictions]
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

    def ranges(self) -> list[int]:
        ids: list[int] = []
        for _ in range(self.read(12)):
            is_range = self.flag()
            start = self.read(16)
            end = self.read(16) if is_range else start
            if end < start or end - start > 65535:
                raise BadRequestError(f"TC string: bad vendor range {start}-{end}")
            ids.extend(range(start, end + 1))
        return ids

    def vendors(self) -> list[int]:
        max_id = self.read(16)
        if self.flag():
            return [v for v in self.ranges() if v <= max_id]
        return self.bitfield(max_id)


def _segment_bytes(text: str) -> bytes:
    clean = text.strip().rstrip("=")
    try:
        padded = clean + "=" * (-len(clean) % 4)
        return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise BadRequestError("TC string: a segment is not web-safe base64") from None


def decode(tc_string: str) -> TCString:
    """Decode a TC string; BadRequestError (400) with a reason when it is not one."""
    if not tc_string or len(tc_string) > 10_000:
        raise BadRequestError("TC string is empty or too long")
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
                    purpose, RESTRICTION_TYPES.get(kind, f"undefined_{kind}"), tuple(bits.ranges())
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


def choices(
    tc: TCString, purposes: dict[str, Any], vendor_id: int | None = None
) -> list[TcfChoice]:
    """What the string says about each project purpose that lists `tcf_purposes`."""
    found: list[TcfChoice] = []
    for name, config in purposes.items():
        listed = list(getattr(config, "tcf_purposes", []) or [])
        if not listed:
            continue
        basis = config.legal_basis
        if basis == "consent":
            missing = [p for p in listed if p not in tc.purposes_consent]
            vendor_ok = vendor_id is None or vendor_id in tc.vendor_consents
            if not missing and vendor_ok:
                found.append(TcfChoice(name, "grant", f"TCF purposes {listed} consented"))
            else:
                why = (
                    f"TCF purposes {missing} not consented"
                    if missing
                    else (f"vendor {vendor_id} has no consent")
                )
                found.append(TcfChoice(name, "revoke", why))
        elif basis == "legitimate_interest":
            missing = [p for p in listed if p not in tc.purposes_li_transparency]
            vendor_ok = vendor_id is None or vendor_id in tc.vendor_legitimate_interests
            if missing or not vendor_ok:
                found.append(
                    TcfChoice(name, "object", f"legitimate interest refused for TCF {listed}")
                )
    return found
