"""Redacting an erased subject from the audit log without breaking its proof.

An erasure (GDPR Art. 17) must not leave the person's id in clear in the audit log, and
the audit log must still prove nothing was edited. Both hold this way:

1. the records that name the subject (in `subjects`, in `detail`, anywhere in the
   body: an exact value, or a whole word of a longer text; numbers only in `subjects`
   and `detail`, not counts or times) get a redacted body where
   each occurrence is replaced by the subject's pseudonym (`erased:<keyed hash>`);
2. *before* any body changes, one chained record (the erasure report, action
   `erasure`) lists each redaction as `[seq, sha256(redacted body)]`;
3. then the bodies are replaced in place; stored hashes and links are left as they
   were, so the chain still links from the first record to the anchor.

`AuditLog.verify` accepts a record whose body no longer matches its hash only when an
intact, later `erasure` record authorised exactly that body (its SHA-256); any other
change, including a further edit of a redacted body, is still reported. A crash between
2 and 3 leaves the original bodies, which verify as they always did; running the
erasure again redacts them.

What this does not prove: that the redacted body's other fields are the original ones
(the original bytes are gone by design). The redaction is limited to replacing values
equal to the subject's identifiers, and the authorising record says who did it and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from tidegate.meta.base import StoredAuditRecord

ERASURE_ACTION = "erasure"


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def canonical(data: Any) -> str:
    """The same JSON form `AuditRecord.canonical` writes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class Redactor:
    """Replaces identifiers (exact values, or whole words inside longer strings)."""

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

    def mentions(self, text: str) -> bool:
        return any(i in text for i in self.identifiers)


def redactions_for(records: Iterable[StoredAuditRecord], redactor: Redactor) -> dict[int, str]:
    """seq -> redacted body, for every record whose body names an identifier."""
    found: dict[int, str] = {}
    for stored in records:
        if not redactor.mentions(stored.body):
            continue
        try:
            data = json.loads(stored.body)
        except ValueError:
            continue  # an unreadable body is `verify`'s to report, not ours to rewrite
        redacted = canonical(_redact_record(data, redactor))
        if redacted != stored.body:
            found[stored.seq] = redacted
    return found


#: where numbers can be identifiers; elsewhere (rows, counts, times) they are not
IDENTIFYING_FIELDS = ("subjects", "detail")


def _redact_record(data: Any, redactor: Redactor) -> Any:
    if not isinstance(data, dict):
        return redactor.value(data)
    return {
        key: (
            redactor.value(value)
            if key in IDENTIFYING_FIELDS
            else redactor.text(value)
            if isinstance(value, str)
            else value
        )
        for key, value in data.items()
    }


def authorised_redactions(
    records: Iterable[tuple[StoredAuditRecord, bool]],
) -> dict[int, tuple[str, int]]:
    """seq -> (sha256 of the authorised body, seq of the authorising record), from the
    intact (`True`) `erasure` records among `records`."""
    authorised: dict[int, tuple[str, int]] = {}
    for stored, intact in records:
        if not intact or f'"action":"{ERASURE_ACTION}"' not in stored.body:
            continue
        try:
            data = json.loads(stored.body)
        except ValueError:
            continue
        if data.get("action") != ERASURE_ACTION:
            continue
        for item in (data.get("detail") or {}).get("redactions") or []:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], int)
                and item[0] < stored.seq
            ):
                authorised[item[0]] = (str(item[1]), stored.seq)
    return authorised
