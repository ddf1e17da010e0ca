"""Append-only audit records, each holding a keyed hash (HMAC) over itself and the one
before it.

The chain makes any edit, deletion, insertion or reordering of stored records
visible to `verify()`: each record's hash covers its own canonical body and the
previous hash, so changing one record breaks its own hash and every later link. The
hash is an HMAC-SHA256 under the audit key (`privacy/secrets.py`: an environment
variable or a 0600 file in the state folder, never the metadata database), so someone
who can write the metadata database but does not hold the key cannot compute the hash
of a record they forge or edit: nothing in the database is trusted by `verify`.

Chains written before the chain was keyed (plain SHA-256) are checked, and sealed after
a review, as `chain.py` describes.

The chain alone cannot show that its *tail* was cut off (the remaining records are
still consistent). An `AuditAnchor` kept outside the log (a small signed file, see
`anchor.py`) remembers the last (seq, hash) written; `verify()` checks the log still
reaches it.

Two ways to append:

* `append(*records)`: durable when it returns (admin actions, syncs, CLI);
* `submit(record)`: queued and written in batches by a background thread
  (`writer.py`), for the serving API's hot path. Reads through this class
  (`records`, `verify`, `last_seq`) and `append` flush the queue first, so a process
  always sees its own records in the order it produced them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.audit.chain import (
    GENESIS,
    SEAL_OP,
    ChainIssue,
    Verification,
    chain_hash,
    chain_key,
    unsealed_prefix,
    walk,
)
from tidegate.meta.base import MetadataStore, StoredAuditRecord

__all__ = [
    "GENESIS",
    "SEAL_OP",
    "AuditLog",
    "AuditRecord",
    "ChainIssue",
    "Verification",
    "chain_hash",
    "link",
]

if TYPE_CHECKING:
    from tidegate.audit.anchor import AuditAnchor
    from tidegate.audit.writer import AuditWriter

log = logging.getLogger(__name__)


#: the most characters a text field of a record keeps (longer values are clipped, `…`)
FIELD_LIMITS = {"action": 64, "principal": 256, "purpose": 128, "product": 128, "outcome": 64}
SUBJECT_LIMIT = 256
NAME_LIMIT = 128
MAX_COLUMNS = 1_000
DETAIL_TEXT_LIMIT = 1_024


def clip(text: str, limit: int) -> str:
    """`text` within `limit` characters; clipping twice changes nothing."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _capped(value: Any) -> Any:
    """Strings within `detail` clipped (lists and nesting are the producer's, not the
    caller's: erasure reports list every redaction and must stay whole)."""
    if isinstance(value, str):
        return clip(value, DETAIL_TEXT_LIMIT)
    if isinstance(value, dict):
        return {clip(str(k), NAME_LIMIT): _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_capped(v) for v in value)
    return value


@dataclass(frozen=True)
class AuditRecord:
    """Who did what, on which data, for which purpose; never holds secrets or row values."""

    action: str  # serve | sync | export | publish | admin | consent | deny | erasure | ...
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

    def __post_init__(self) -> None:
        # every field may carry caller input (an X-Purpose header, a path, a JWT subject):
        # capped here, once, so no caller can write an unbounded record (issue 13)
        for name, limit in FIELD_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > limit:
                object.__setattr__(self, name, clip(value, limit))
        # max(map(len, ...)) runs in C: these checks are on the serving hot path
        if max(map(len, self.subjects), default=0) > SUBJECT_LIMIT:
            object.__setattr__(
                self, "subjects", tuple(clip(s, SUBJECT_LIMIT) for s in self.subjects)
            )
        columns = self.columns
        if (
            len(columns) > MAX_COLUMNS
            or max(map(len, columns), default=0) > NAME_LIMIT
            or max(map(len, columns.values()), default=0) > NAME_LIMIT
        ):
            capped = list(self.columns.items())[:MAX_COLUMNS]
            object.__setattr__(
                self, "columns", {clip(k, NAME_LIMIT): clip(v, NAME_LIMIT) for k, v in capped}
            )
        object.__setattr__(self, "detail", _capped(self.detail))

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

    @classmethod
    def readable(cls, body: str) -> AuditRecord:
        """The record a stored body holds, or a placeholder saying it cannot be read
        (a damaged body must not stop `audit tail` or `search`; `verify` names it)."""
        try:
            return cls.from_canonical(body)
        except (ValueError, KeyError, TypeError) as err:
            return cls(
                action="unreadable",
                principal="?",
                outcome="unreadable",
                detail={"error": f"{type(err).__name__}: {err}"[:200]},
                at=0.0,
            )


def link(
    records: list[AuditRecord], last: StoredAuditRecord | None, key: bytes
) -> list[StoredAuditRecord]:
    """Chain `records` after `last` (None: the log is empty) under the chain key."""
    seq, prev = (last.seq, last.hash) if last else (0, GENESIS)
    stored = []
    for record in records:
        seq += 1
        body = record.canonical()
        digest = chain_hash(seq, prev, body, key)
        stored.append(StoredAuditRecord(seq, body, prev, digest))
        prev = digest
    return stored


class AuditLog:
    def __init__(
        self, store: MetadataStore, anchor: AuditAnchor | None = None, *, key: bytes
    ) -> None:
        """`key`: the audit key (`privacy.secrets.load_audit_key`), kept out of `store`."""
        self._store = store
        self._key = chain_key(key)
        self._lock = threading.Lock()
        self.anchor = anchor
        self._writer: AuditWriter | None = None
        self._writer_lock = threading.Lock()
        #: called with each batch once it is stored (access monitors: privacy/monitors.py)
        self.observers: list[Callable[[list[AuditRecord]], None]] = []

    # ------------------------------------------------------------ writing

    def append(self, *records: AuditRecord) -> list[int]:
        """Append durably; returns the sequence numbers given to the records."""
        self.flush()
        return self.write_batch(list(records))

    def write_batch(self, records: list[AuditRecord]) -> list[int]:
        """Chain and store `records` in one transaction, then advance the anchor."""
        if not records:
            return []
        with self._lock:
            stored = self._store.append_audit_chained(lambda last: link(records, last, self._key))
            if self.anchor is not None and stored:
                self.anchor.advance(stored[0].seq, stored[-1].seq, stored[-1].hash, self._store)
        for observer in list(self.observers):
            try:
                observer(records)
            except Exception:  # a monitor must never fail an audit write
                log.exception("audit observer failed")
        return [s.seq for s in stored]

    @property
    def writer(self) -> AuditWriter:
        """The background batch writer (started on first use)."""
        with self._writer_lock:
            if self._writer is None:
                from tidegate.audit.writer import AuditWriter

                self._writer = AuditWriter(self)
            return self._writer

    def submit(self, record: AuditRecord) -> None:
        """Queue a record for the background writer; returns at once."""
        self.writer.submit(record)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submitted record is stored (no-op without a writer)."""
        if self._writer is not None:
            self._writer.flush(timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer; `append` still works afterwards."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    # ------------------------------------------------------------ reading

    def last_seq(self) -> int:
        self.flush()
        last = self._store.last_audit()
        return last.seq if last else 0

    def records(self, after_seq: int = 0) -> Iterator[tuple[int, AuditRecord]]:
        self.flush()
        for stored in self._store.audit_records(after_seq):
            yield stored.seq, AuditRecord.readable(stored.body)

    def seal(self, principal: str) -> int | None:
        """Seal the unkeyed prefix of a chain written before it was keyed, after a person
        reviewed it: appends a keyed admin record naming its last record. None: nothing
        to seal."""
        self.flush()
        last = unsealed_prefix(self._store.audit_records(), self._key)
        if last == 0:
            return None
        (seq,) = self.append(
            AuditRecord(
                action="admin", principal=principal, detail={"op": SEAL_OP, "sealed_through": last}
            )
        )
        return seq

    def verify(self) -> list[ChainIssue]:
        """Walk the chain; every break is reported with the record where it shows."""
        return self.verification().issues

    def verification(self) -> Verification:
        """`verify`, with notes on what the walk cannot prove (chain.py)."""
        self.flush()
        result = walk(self._store.audit_records(), self._key)
        if self.anchor is not None:
            result.issues += self.anchor.check(self._store, result.last_seq)
        return result
