"""What one sync run did, in the destination's own numbers, and row errors without personal values.

Counts are what the destination confirms (`apply.Outcome`): `inserted` rows it did not
hold, `updated` rows it held, `deleted` rows it removed; `unchanged` rows the diff found
equal to what was sent before; `failed` rows it refused; `withheld` rows the guard kept
back (no legal basis for the purpose), with the reason; `skipped` rows not sent, with
the reason (an `update` of a row the destination does not hold is one); `retries` and
their reasons. `added`, `changed` and `removed` are the older names of inserted,
updated and deleted, kept for scripts that read them.

A destination's refusal often quotes the row ("Failing row contains (7, ann@x.org…)",
"Duplicate entry 'ann@x.org'"); `scrub` replaces the row's values in the message by the
field name, so the error store and the history keep the key and the destination's
words, never the email.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# PostgreSQL quotes the whole row in its own formats (timestamps, numbers), which a
# value-by-value replacement can miss: the list goes as a whole
_FAILING_ROW = re.compile(r"Failing row contains \(.*?\)(?=\.?\s*$|\.?\n)", re.S | re.M)

NOT_FOUND = "not at the destination: mode update changes only rows it holds"
ALREADY_GONE = "already gone from the destination"


@dataclass
class SyncReport:
    sync: str
    added: int = 0  # inserted: rows the destination did not hold
    changed: int = 0  # updated: rows the destination held
    removed: int = 0  # deleted (or suppressed where the destination cannot delete)
    unchanged: int = 0
    failed: int = 0
    revoked: int = 0  # of `removed`: subjects who lost the legal basis
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    withheld: dict[str, int] = field(default_factory=dict)  # guard's reason -> rows
    retries: dict[str, int] = field(default_factory=dict)  # reason -> retries
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_error: str | None = None
    seconds: float = 0.0
    run_id: int = 0
    partial: bool = False
    blocked: list[str] = field(default_factory=list)  # tripped circuit breakers
    approved: bool = False  # ran past its breakers on an approval

    @property
    def status(self) -> str:
        if self.blocked:
            return "blocked"
        return "failed" if self.run_error or self.failed else "ok"

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def withheld_total(self) -> int:
        return sum(self.withheld.values())

    def counts(self) -> dict[str, Any]:
        return {
            "inserted": self.added,
            "updated": self.changed,
            "deleted": self.removed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "withheld": self.withheld_total,
            "withheld_reasons": dict(self.withheld),
            "retries": sum(self.retries.values()),
            "retry_reasons": dict(self.retries),
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "revoked": self.revoked,
            "skipped": self.skipped_total,
            "skipped_reasons": dict(self.skipped),
            "partial": self.partial,
            "blocked": list(self.blocked),
            "approved": self.approved,
        }

    def skip(self, reason: str, rows: int) -> None:
        if rows:
            self.skipped[reason] = self.skipped.get(reason, 0) + rows

    def withhold(self, reason: str, rows: int) -> None:
        if rows:
            self.withheld[reason] = self.withheld.get(reason, 0) + rows


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def scrub(message: str, row: dict[str, Any]) -> str:
    """The destination's message with the row's values replaced by `<field>`; longest
    values first, so a value inside another is not half replaced. Short values (one
    character, booleans) are left: they say nothing about a person and would mangle
    the message."""
    values = sorted(
        (
            (_text(v), name)
            for name, v in row.items()
            if v is not None and not isinstance(v, bool) and len(_text(v)) > 1
        ),
        key=lambda item: -len(item[0]),
    )
    message = _FAILING_ROW.sub("Failing row contains (<the row>)", message)
    for text, name in values:
        message = message.replace(text, f"<{name}>")
    return message
