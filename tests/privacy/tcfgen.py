"""A small TC string encoder for tests: core segment fields in, web-safe base64 out.

Written from the IAB "Consent string and vendor list formats v2" bit layout, so the tests
can state exactly what a string says (day-rounded times, restrictions, huge ranges)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Range = tuple[int, int]


def _int(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def _bits(ids: Iterable[int], width: int) -> str:
    chosen = set(ids)
    return "".join("1" if i + 1 in chosen else "0" for i in range(width))


def _ranges(entries: Sequence[Range]) -> str:
    out = _int(len(entries), 12)
    for start, end in entries:
        out += ("1" + _int(start, 16) + _int(end, 16)) if end != start else "0" + _int(start, 16)
    return out


def _vendors(ids: Sequence[int] = (), ranges: Sequence[Range] | None = None) -> str:
    if ranges is not None:
        top = max((end for _, end in ranges), default=0)
        return _int(top, 16) + "1" + _ranges(ranges)
    top = max(ids, default=0)
    return _int(top, 16) + "0" + _bits(ids, top)


@dataclass
class Core:
    last_updated: float = 1_600_000_000.0  # unix seconds (the encoder rounds to a day)
    created: float | None = None
    cmp_id: int = 7
    purposes_consent: Sequence[int] = ()
    purposes_li: Sequence[int] = ()
    purpose_one_treatment: bool = False
    publisher_cc: str = "FR"
    vendor_consents: Sequence[int] = ()
    vendor_li: Sequence[int] = ()
    vendor_consent_ranges: Sequence[Range] | None = None
    vendor_li_ranges: Sequence[Range] | None = None
    #: (purpose, kind 0 not allowed / 1 require consent / 2 require LI, vendor ranges)
    restrictions: Sequence[tuple[int, int, Sequence[Range]]] = field(default_factory=list)

    def encode(self) -> str:
        created = self.last_updated if self.created is None else self.created
        letters = "".join(_int(ord(c) - ord("A"), 6) for c in "EN")
        cc = "".join(_int(ord(c) - ord("A"), 6) for c in self.publisher_cc)
        bits = (
            _int(2, 6)
            + _int(int(created * 10), 36)
            + _int(int(self.last_updated * 10), 36)
            + _int(self.cmp_id, 12)
            + _int(1, 12)
            + _int(1, 6)
            + letters
            + _int(100, 12)
            + _int(4, 6)
            + "0"  # IsServiceSpecific
            + "0"  # UseNonStandardTexts
            + _int(0, 12)
            + _bits(self.purposes_consent, 24)
            + _bits(self.purposes_li, 24)
            + ("1" if self.purpose_one_treatment else "0")
            + cc
            + _vendors(self.vendor_consents, self.vendor_consent_ranges)
            + _vendors(self.vendor_li, self.vendor_li_ranges)
            + _int(len(self.restrictions), 12)
        )
        for purpose, kind, vendors in self.restrictions:
            bits += _int(purpose, 6) + _int(kind, 2) + _ranges(vendors)
        bits += "0" * (-len(bits) % 8)
        data = int(bits, 2).to_bytes(len(bits) // 8, "big")
        return base64.urlsafe_b64encode(data).decode().rstrip("=")


def day_of(moment: float) -> float:
    """The start of the UTC day of `moment`: what the IAB encoder writes as a timestamp."""
    return moment - moment % 86400
