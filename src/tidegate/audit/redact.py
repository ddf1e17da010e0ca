"""Redacting an erased subject from the audit log without breaking its proof.

An erasure (GDPR Art. 17) must not leave the person's id in clear in the audit log, and
the audit log must still prove nothing was edited. Both hold this way:

1. only the fields an audit record declares as naming subjects are touched (see
   `SUBJECT_FIELDS`): a value equal to the subject's id in `subjects` or in
   `detail.subject`, and, in a record about a product, an entity key of the subject in
   `detail.key` / `detail.keys`. Nothing else, ever: not counts, times or principals
   that happen to equal the id (erasing subject `1` once rewrote every `rows: 1`, and
   erasing a string equal to a principal's name rewrote thousands of principals). Each
   such value is replaced by the subject's pseudonym (`erased:<keyed hash>`);
2. *before* any body changes, one chained record (the erasure report, action
   `erasure`) lists each redaction as `[seq, sha256(redacted body)]`;
3. then the bodies are replaced in place; stored hashes and links are left as they
   were, so the chain still links from the first record to the anchor.

`AuditLog.verify` accepts a record whose body no longer matches its hash only when an
intact, later `erasure` record authorised exactly that body (its SHA-256); any other
change, including a further edit of a redacted body, is still reported. An erasure
record is itself intact when its hash matches, or when a later intact erasure
authorised its redacted body, so any number of erasures keep `verify` clean. A crash
between 2 and 3 leaves the original bodies, which verify as they always did; running
the erasure again redacts them.

What this does not prove: that the redacted body's other fields are the original ones
(the original bytes are gone by design). The redaction is limited to replacing values
in the declared subject fields, and the authorising record says who did it and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.meta.base import StoredAuditRecord

ERASURE_ACTION = "erasure"


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def canonical(data: Any) -> str:
    """The same JSON form `AuditRecord.canonical` writes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class Redactor:
    """Replaces identifiers (exact values, or whole words inside longer strings) in free
    text outside the audit log (run stats) and in text about to be written (an erasure's
    reason). Never used on stored audit records: see `SubjectRedaction`."""

    def __init__(self, identifiers: Iterable[str], token: str) -> None:
        self.identifiers = {i for i in (str(v) for v in identifiers) if i}
        self.token = token
        words = sorted(self.identifiers, key=len, reverse=True)
        self._pattern = (
            re.compile(
                r"(?<![0-9A-Za-z_@.+-])(?:"
                + "|".join(re.escape(w) for w in words)
                + r")(?![0-9A-Za-z_@-])"
            )
            if words
            else None
        )

    def text(self, value: str) -> str:
        if value in self.identifiers:
            return self.token
        if self._pattern is None:
            return value
        return self._pattern.sub(self.token, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return self.token if str(value) in self.identifiers else value
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        return value

    def json_text(self, text: str) -> str:
        """`text` redacted; when it is JSON (run stats), field by field: strings and
        the members of lists (keys) that are identifiers are replaced, scalar numbers
        (counts) are kept, so `rows: 1` survives erasing subject `1` and stays JSON."""
        try:
            data = json.loads(text)
        except ValueError:
            return self.text(text)
        return json.dumps(self._fields(data))

    def _fields(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.text(str(k)): self._fields(v) for k, v in value.items()}
        if isinstance(value, list):
            return [
                self.value(v) if not isinstance(v, dict | list) else self._fields(v) for v in value
            ]
        if isinstance(value, str):
            return self.text(value)
        return value  # a count, a flag, a time

    def mentions(self, text: str) -> bool:
        return any(i in text for i in self.identifiers)


#: the fields of an audit record that name subjects: top-level lists of subject ids, and
#: `detail` fields holding a subject id; `KEY_FIELDS` hold entity keys of `product`
SUBJECT_FIELDS = ("subjects",)
SUBJECT_DETAIL_FIELDS = ("subject",)
KEY_DETAIL_FIELDS = ("key", "keys")


@dataclass(frozen=True)
class SubjectRedaction:
    """What to replace for one erased subject, and with what.

    `subject`: the subject's id (a declared subject type's id: today the products'
    subject column); `keys`: product -> the subject's entity keys in it (its rows'
    keys, and its id where the key column is the subject column)."""

    subject: str
    token: str
    keys: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def _one(self, value: Any, names: frozenset[str] | set[str]) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, str | int) and str(value) in names:
            return self.token
        return value

    def record(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        ids = {self.subject}
        for name in SUBJECT_FIELDS:
            if isinstance(out.get(name), list):
                out[name] = [self._one(v, ids) for v in out[name]]
        detail = out.get("detail")
        if isinstance(detail, dict):
            detail = dict(detail)
            for name in SUBJECT_DETAIL_FIELDS:
                if name in detail:
                    detail[name] = self._one(detail[name], ids)
            keys = self.keys.get(str(out.get("product")))
            for name in KEY_DETAIL_FIELDS if keys else ():
                value = detail.get(name)
                if isinstance(value, list):
                    detail[name] = [self._one(v, keys) for v in value]  # type: ignore[arg-type]
                elif name in detail:
                    detail[name] = self._one(value, keys)  # type: ignore[arg-type]
            out["detail"] = detail
        return out

    def mentions(self, body: str) -> bool:
        """A cheap pre-filter: could the body name the subject at all?"""
        return self.subject in body or any(k in body for ks in self.keys.values() for k in ks)


def redactions_for(
    records: Iterable[StoredAuditRecord], redaction: SubjectRedaction
) -> dict[int, str]:
    """seq -> redacted body, for every record whose subject fields name the subject."""
    found: dict[int, str] = {}
    for stored in records:
        if not redaction.mentions(stored.body):
            continue
        try:
            data = json.loads(stored.body)
        except ValueError:
            continue  # an unreadable body is `verify`'s to report, not ours to rewrite
        if not isinstance(data, dict):
            continue
        redacted = canonical(redaction.record(data))
        if redacted != stored.body:
            found[stored.seq] = redacted
    return found


def authorised_redactions(
    records: Iterable[tuple[StoredAuditRecord, bool]],
) -> dict[int, tuple[str, int]]:
    """seq -> (sha256 of the authorised body, seq of the authorising record), from the
    intact (`True`) `erasure` records among `records`.

    Walked from the newest record back: an erasure record whose own body a later
    erasure redacted counts as intact when that later record authorised exactly its
    body, so a second erasure never orphans the first one's authorisations. The latest
    authorisation of a record wins (its body is the last one written)."""
    authorised: dict[int, tuple[str, int]] = {}
    for stored, intact in reversed(list(records)):
        if not intact:
            allowed = authorised.get(stored.seq)
            intact = allowed is not None and allowed[0] == body_digest(stored.body)
        if not intact or f'"action":"{ERASURE_ACTION}"' not in stored.body:
            continue
        try:
            data = json.loads(stored.body)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("action") != ERASURE_ACTION:
            continue
        for item in (data.get("detail") or {}).get("redactions") or []:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], int)
                and item[0] < stored.seq
            ):
                authorised.setdefault(item[0], (str(item[1]), stored.seq))
    return authorised
