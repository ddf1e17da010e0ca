"""Append-only audit records, each holding the hash of the one before it.

The chain makes any edit, deletion, insertion or reordering of stored records
visible to `verify()`: each record's hash covers its own canonical body and the
previous hash, so changing one record breaks its own hash and every later link.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidegate.meta.base import MetadataStore, StoredAuditRecord

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    """Who did what, on which data, for which purpose; never holds secrets or row values."""

    action: str  # serve | sync | export | publish | admin | consent | deny
    principal: str
    purpose: str | None = None
    product: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # column -> treatment
    rows: int = 0
    subjects: tuple[str, ...] = ()
    subject_count: int | None = None  # when `subjects` is a sample of a larger set
    outcome: str = "allowed"
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def canonical(self) -> str:
        body = {
            "action": self.action,
            "principal": self.principal,
            "purpose": self.purpose,
            "product": self.product,
            "columns": self.columns,
            "rows": self.rows,
            "subjects": list(self.subjects),
            "subject_count": (
                len(self.subjects) if self.subject_count is None else self.subject_count
            ),
            "outcome": self.outcome,
            "detail": self.detail,
            "at": self.at,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)

    @classmethod
    def from_canonical(cls, body: str) -> AuditRecord:
        data = json.loads(body)
        return cls(
            action=data["action"],
            principal=data["principal"],
            purpose=data["purpose"],
            product=data["product"],
            columns=data["columns"],
            rows=data["rows"],
            subjects=tuple(data["subjects"]),
            subject_count=data["subject_count"],
            outcome=data["outcome"],
            detail=data["detail"],
            at=data["at"],
        )


@dataclass(frozen=True)
class ChainIssue:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


def chain_hash(seq: int, prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{seq}\n{prev_hash}\n{body}".encode()).hexdigest()


class AuditLog:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def append(self, *records: AuditRecord) -> list[int]:
        """Append durably; returns the sequence numbers given to the records."""
        with self._lock:
            last = self._store.last_audit()
            seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
            stored = []
            for record in records:
                seq += 1
                body = record.canonical()
                digest = chain_hash(seq, prev, body)
                stored.append(StoredAuditRecord(seq, body, prev, digest))
                prev = digest
            self._store.append_audit(stored)
            return [s.seq for s in stored]

    def records(self, after_seq: int = 0) -> Iterator[tuple[int, AuditRecord]]:
        for stored in self._store.audit_records(after_seq):
            yield stored.seq, AuditRecord.from_canonical(stored.body)

    def verify(self) -> list[ChainIssue]:
        """Walk the chain; every break is reported with the record where it shows."""
        issues: list[ChainIssue] = []
        expected_prev = GENESIS
        expected_seq = 1
        for stored in self._store.audit_records():
            if stored.seq != expected_seq:
                issues.append(
                    ChainIssue(
                        stored.seq,
                        f"sequence jumps from {expected_seq - 1} to {stored.seq}: "
                        "records were deleted or inserted",
                    )
                )
            if stored.prev_hash != expected_prev:
                issues.append(
                    ChainIssue(
                        stored.seq,
                        "previous-hash link is broken: a record before it was changed, "
                        "removed, inserted or moved",
                    )
                )
            if chain_hash(stored.seq, stored.prev_hash, stored.body) != stored.hash:
                issues.append(ChainIssue(stored.seq, "content does not match its hash: edited"))
            expected_prev = stored.hash
            expected_seq = stored.seq + 1
        return issues
