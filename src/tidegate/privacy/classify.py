"""Suggest classifications for columns from their names and sampled values.

Each column gets at most one suggestion: a taxonomy key, a confidence in [0, 1] and the
reasons. Values are checked by detectors that validate, not just pattern-match: card
numbers must pass the Luhn check, IBANs the ISO 13616 mod-97 check, IP addresses must
parse, dates of birth must be plausible ages. A value detector's confidence is the share
of sampled non-empty values it accepts; a matching column name adds to it. Nothing is
written unless the user asks (`tidegate classify --write`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.project.taxonomy import NAME_RULES as NAME_RULES
from tidegate.project.taxonomy import name_hint as name_hint

if TYPE_CHECKING:
    from tidegate.platform import Platform
    from tidegate.project.project import Product, Source

MIN_SHARE = 0.8  # of sampled values a detector must accept to speak
NAME_ONLY = 0.6  # confidence of a suggestion from the column name alone


@dataclass(frozen=True)
class Suggestion:
    column: str
    classification: str
    confidence: float
    reasons: tuple[str, ...] = field(default=())


# ------------------------------------------------------------------ validators


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[\d\s().-]{7,22}$")
_CARD = re.compile(r"^\d(?:[ -]?\d){12,18}$")
_POSTAL = re.compile(
    r"^(\d{5}(-\d{4})?|\d{4}|\d{3}-\d{4}|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d"
    r"|\d{2}-\d{3}|\d{3} ?\d{2})$",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[A-ZÀ-Þ][a-zà-ÿ'\u2019-]+( [A-ZÀ-Þ][a-zà-ÿ'\u2019-]+){0,3}$")


def is_email(text: str) -> bool:
    return bool(_EMAIL.match(text))


def is_phone(text: str) -> bool:
    if not _PHONE.match(text):
        return False
    digits = re.sub(r"\D", "", text)
    # a bare run of digits is more likely an id; phones carry a + or separators
    return 7 <= len(digits) <= 15 and (text.startswith("+") or not text.isdigit())


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_card(text: str) -> bool:
    if not _CARD.match(text):
        return False
    digits = re.sub(r"\D", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def birth_date(value: Any, today: dt.date) -> bool:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value[:10])
        except ValueError:
            return False
    if not isinstance(value, dt.date):
        return False
    age = (today - value).days / 365.25
    return 13 <= age <= 110


def is_postal(text: str) -> bool:
    return bool(_POSTAL.match(text.strip()))


def is_person_name(text: str) -> bool:
    return bool(_NAME.match(text.strip()))


# (classification, what it looks like, detector on text, needs a name hint)
VALUE_DETECTORS: list[tuple[str, str, Callable[[str], bool], bool]] = [
    ("user.contact.email", "email addresses", is_email, False),
    ("user.financial.credit_card", "card numbers passing the Luhn check", is_card, False),
    ("user.financial.bank_account", "IBANs passing the mod-97 check", iban_ok, False),
    ("user.device.ip_address", "IP addresses", is_ip, False),
    ("user.contact.phone_number", "phone numbers", is_phone, False),
    # these shapes are common in other data: only with a matching column name
    ("user.contact.address.postal_code", "postal codes", is_postal, True),
    ("user.name", "personal names", is_person_name, True),
]


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def suggest(column: str, values: Sequence[Any], today: dt.date | None = None) -> Suggestion | None:
    """The best classification for one column, or None when nothing points to one."""
    today = today or dt.date.today()
    hint = name_hint(column)
    present = [v for v in values if v is not None and str(v).strip() != ""]
    best: Suggestion | None = None
    if present:
        texts = [str(v).strip() for v in present]
        candidates: list[tuple[str, str, float]] = []
        for classification, what, detector, needs_hint in VALUE_DETECTORS:
            if needs_hint and not (hint and _related(hint, classification)):
                continue
            share = sum(1 for t in texts if detector(t)) / len(texts)
            candidates.append((classification, what, share))
        dob = sum(1 for v in present if birth_date(v, today)) / len(present)
        if hint == "user.demographic.date_of_birth":
            candidates.append(("user.demographic.date_of_birth", "plausible birth dates", dob))
        for classification, what, share in candidates:
            if share < MIN_SHARE:
                continue
            reasons = [f"{share:.0%} of {len(present)} sampled values are {what}"]
            confidence = 0.5 + 0.45 * share
            if hint and _related(hint, classification):
                confidence = min(0.99, confidence + 0.1)
                reasons.append(f"the column name {column!r} says so too")
                classification = hint if hint.startswith(classification) else classification
            if best is None or confidence > best.confidence:
                best = Suggestion(column, classification, round(confidence, 2), tuple(reasons))
    if best is None and hint is not None:
        why: tuple[str, ...] = (f"the column name {column!r}",)
        if not present:
            why += ("no values sampled",)
        best = Suggestion(column, hint, NAME_ONLY, why)
    return best


def suggest_table(
    columns: Mapping[str, Sequence[Any]], today: dt.date | None = None
) -> list[Suggestion]:
    found = (suggest(name, values, today) for name, values in columns.items())
    return [s for s in found if s is not None]


def as_yaml(suggestions: list[Suggestion], existing: dict[str, str | None], header: str) -> str:
    """The suggestions as a `columns:` YAML block the user can paste, with reasons."""
    lines = [f"# {header}", "columns:"]
    for s in suggestions:
        lines.append(f"  {s.column}:")
        note = f"  # {s.confidence:.2f}: {'; '.join(s.reasons)}"
        current = existing.get(s.column)
        if current and current != s.classification:
            note += f" (currently {current})"
        lines.append(f"    classification: {s.classification}{note}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ on a project


@dataclass
class Classified:
    name: str
    kind: str  # source | product
    sampled_rows: int
    suggestions: list[Suggestion]
    existing: dict[str, str | None]
    path: Any  # the YAML file declaring it

    def header(self) -> str:
        sample = f"{self.sampled_rows} sampled rows" if self.sampled_rows else "no data sampled"
        return f"tidegate classify {self.name} ({self.kind}, {sample}); review before accepting"


def classify(platform: Platform, name: str, sample: int = 1000) -> Classified:
    """Suggestions for a source (from `raw.<name>`) or a product (its live version)."""
    from tidegate.errors import NotFoundError
    from tidegate.store.warehouse import PRODUCTS, RAW

    project = platform.project
    item: Source | Product
    if name in project.sources:
        item, kind, schema = project.sources[name], "source", RAW
    elif name in project.products:
        item, kind, schema = project.products[name], "product", PRODUCTS
    else:
        raise NotFoundError(f"no source or product named {name!r}")
    columns = list(item.columns)
    values: dict[str, list[Any]] = {c: [] for c in columns}
    rows = 0
    if platform.warehouse.has_relation(schema, name):
        quoted = ", ".join(f'"{c}"' for c in columns)
        table = platform.warehouse.arrow(
            f'SELECT {quoted} FROM {schema}."{name}" USING SAMPLE {int(sample)} ROWS'
        )
        rows = table.num_rows
        values = {c: table.column(c).to_pylist() for c in columns}
    existing = {c: spec.classification for c, spec in item.columns.items()}
    return Classified(name, kind, rows, suggest_table(values), existing, item.doc.path)


def write_classifications(
    path: Any, suggestions: list[Suggestion], existing: dict[str, Any]
) -> list[str]:
    """Add `classification:` to columns that have none, in place; returns what was added.

    Block mappings (`email:` then indented keys) get a new line; one-line flow mappings
    (`email: {type: VARCHAR}`) get a new entry. Anything else is left alone.
    """
    from pathlib import Path

    from tidegate.project.yamlfile import load_yaml

    file = Path(path)
    doc = load_yaml(file)
    lines = file.read_text().splitlines(keepends=True)
    edits: list[tuple[int, str, str]] = []  # (line index, kind, text)
    for s in suggestions:
        if existing.get(s.column):
            continue
        line_no = doc.lines.get(("columns", s.column))
        if line_no is None:
            continue
        index = line_no - 1
        text = lines[index]
        head = re.match(rf"^(\s*)(['\"]?){re.escape(s.column)}\2\s*:\s*(#.*)?$", text.rstrip("\n"))
        flow = re.match(
            rf"^(\s*['\"]?{re.escape(s.column)}['\"]?\s*:\s*\{{)(.*)\}}(\s*(#.*)?)$",
            text.rstrip("\n"),
        )
        if head:
            indent = len(head.group(1))
            child = indent + 2
            for following in lines[index + 1 :]:
                if following.strip() and not following.lstrip().startswith("#"):
                    width = len(following) - len(following.lstrip())
                    if width > indent:
                        child = width
                    break
            edits.append((index, "after", " " * child + f"classification: {s.classification}\n"))
        elif flow:
            inner = flow.group(2).strip()
            joined = (
                f"{inner}, classification: {s.classification}"
                if inner
                else (f"classification: {s.classification}")
            )
            edits.append((index, "replace", f"{flow.group(1)}{joined}}}{flow.group(3)}\n"))
    added: list[str] = []
    for index, how, text in sorted(edits, reverse=True):
        if how == "after":
            lines.insert(index + 1, text)
        else:
            lines[index] = text
        added.append(text.strip())
    if edits:
        file.write_text("".join(lines))
    return sorted(added)
