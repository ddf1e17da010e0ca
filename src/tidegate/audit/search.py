"""Find audit records: by principal, purpose, subject, product, action, outcome and time.

A linear scan of the log in sequence order (bodies are canonical JSON); filters are
ANDed. `subject` matches records that carried the subject (every subject of a sync,
export or read is kept beside its record in `audit_subjects`, even when the body names
only a sample of them), records naming it in `subjects`, and records naming it in the
detail field `subject` (erasure and access requests). `subject_type` narrows that to
one kind of person (records written before types match any).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.errors import BadRequestError


@dataclass(frozen=True)
class AuditQuery:
    principal: str | None = None
    purpose: str | None = None
    subject: str | None = None
    subject_type: str | None = None
    product: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    after_seq: int = 0

    def matches(self, record: AuditRecord, carried: bool = False) -> bool:
        """Whether `record` passes every filter; `carried`: it is among the records the
        subject index lists for `subject`."""
        checks = (
            (self.principal, record.principal),
            (self.purpose, record.purpose),
            (self.product, record.product),
            (self.action, record.action),
            (self.outcome, record.outcome),
        )
        if any(wanted is not None and wanted != got for wanted, got in checks):
            return False
        if self.since is not None and record.at < self.since:
            return False
        if self.until is not None and record.at >= self.until:
            return False
        if self.subject_type is not None and record.subject_type not in (
            None,
            self.subject_type,
        ):
            return False
        return self.subject is None or carried or mentions(record, self.subject)


def mentions(record: AuditRecord, subject: str) -> bool:
    if subject in record.subjects:
        return True
    named = record.detail.get("subject")
    return named is not None and str(named) == subject


def search(
    audit: AuditLog, query: AuditQuery, limit: int | None = None
) -> Iterator[tuple[int, AuditRecord]]:
    found = 0
    carried: set[int] = set()
    if query.subject is not None:
        carried = set(audit.subject_seqs(query.subject, query.subject_type))
    for seq, record in audit.records(query.after_seq):
        if query.matches(record, seq in carried):
            yield seq, record
            found += 1
            if limit is not None and found >= limit:
                return


def parse_time(text: str) -> float:
    """ISO date or time (`2026-11-01`, `2026-11-01T12:00:00Z`), a Unix time, or an age
    before now (`15m`, `2h`, `7d`)."""
    from tidegate.project.models import parse_duration

    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return dt.datetime.now(dt.UTC).timestamp() - parse_duration(raw).total_seconds()
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(
            f"{text!r} is not a time: give an ISO date/time (2026-11-01, "
            "2026-11-01T12:00:00Z), a Unix time, or an age like 15m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
