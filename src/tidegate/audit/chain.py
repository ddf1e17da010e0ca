"""The chain itself: how a record's hash is computed, and the walk that checks a log.

Each record's hash is an HMAC-SHA256, under a key derived from the audit key, over its
sequence number, its predecessor's hash and its canonical body. The audit key is kept
outside the metadata database (`privacy/secrets.py`), so nothing stored in the database
is trusted: whoever writes it without the key cannot produce a hash the walk accepts.

Chains written before the chain was keyed carry a plain SHA-256. They are accepted only
as a prefix of the log, and only once a keyed `audit.seal` record (written after a human
review, `tidegate audit seal`) covers them; the walk then notes what it cannot prove
(that they were not forged before the seal). An unkeyed record after a keyed one is a
forgery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidegate.audit.redact import authorised_redactions, body_digest
from tidegate.meta.base import StoredAuditRecord

GENESIS = "0" * 64
#: the admin operation that seals a reviewed, unkeyed prefix
SEAL_OP = "audit.seal"


@dataclass(frozen=True)
class ChainIssue:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


@dataclass
class Verification:
    """What a walk found: problems (the log was tampered with) and notes (what it cannot
    prove, e.g. about records written before the chain was keyed)."""

    issues: list[ChainIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    last_seq: int = 0


def chain_hash(seq: int, prev_hash: str, body: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 under the chain key; `key=None`: the plain SHA-256 of chains written
    before the chain was keyed (read only: nothing new is written that way)."""
    # surrogateescape: a body read back with bytes that are not UTF-8 (see meta/sqlite.py)
    # hashes as exactly those bytes, so tampering shows as a mismatch, not a crash
    text = f"{seq}\n{prev_hash}\n{body}".encode("utf-8", "surrogateescape")
    if key is None:
        return hashlib.sha256(text).hexdigest()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def chain_key(audit_key: bytes) -> bytes:
    """The HMAC key of the chain, derived so the raw secret is used for nothing else."""
    return hmac.new(audit_key, b"tidegate/audit/chain/v1", hashlib.sha256).digest()


def _keyed(records: Sequence[StoredAuditRecord], key: bytes) -> list[bool]:
    return [chain_hash(s.seq, s.prev_hash, s.body, key) == s.hash for s in records]


def _legacy(records: Sequence[StoredAuditRecord], keyed: list[bool]) -> list[bool]:
    """The unkeyed prefix: records before the first keyed one that hash the old way."""
    first = keyed.index(True) if True in keyed else len(records)
    return [
        i < first and chain_hash(s.seq, s.prev_hash, s.body) == s.hash
        for i, s in enumerate(records)
    ]


def unsealed_prefix(records: Sequence[StoredAuditRecord], key: bytes) -> int:
    """The last record of an unkeyed prefix no seal covers yet (0: none)."""
    keyed = _keyed(records, key)
    legacy = _legacy(records, keyed)
    last = max((s.seq for s, old in zip(records, legacy, strict=True) if old), default=0)
    return 0 if last == 0 or _sealed(records, keyed, last) else last


def walk(records: Sequence[StoredAuditRecord], key: bytes) -> Verification:
    """Check every record's keyed hash, sequence and link (the anchor is the caller's)."""
    result = Verification(records=len(records))
    keyed = _keyed(records, key)
    legacy = _legacy(records, keyed)
    first_keyed = keyed.index(True) if True in keyed else len(records)
    # bodies an erasure redacted (audit/redact.py), as authorised by a later record
    redacted = authorised_redactions((s, keyed[i] or legacy[i]) for i, s in enumerate(records))
    expected_prev = GENESIS
    expected_seq = 1
    last_legacy = 0
    for index, stored in enumerate(records):
        if stored.seq != expected_seq:
            result.issues.append(
                ChainIssue(
                    stored.seq,
                    f"sequence jumps from {expected_seq - 1} to {stored.seq}: "
                    "records were deleted or inserted",
                )
            )
        if stored.prev_hash != expected_prev:
            result.issues.append(
                ChainIssue(
                    stored.seq,
                    "previous-hash link is broken: a record before it was changed, "
                    "removed, inserted or moved",
                )
            )
        if legacy[index]:
            last_legacy = stored.seq
        elif not keyed[index]:
            allowed = redacted.get(stored.seq)
            if allowed is None or allowed[0] != body_digest(stored.body):
                result.issues.append(ChainIssue(stored.seq, _mismatch(stored, index > first_keyed)))
        expected_prev = stored.hash
        expected_seq = stored.seq + 1
    result.last_seq = expected_seq - 1
    if last_legacy:
        _judge_legacy(records, keyed, last_legacy, result)
    return result


def _judge_legacy(
    records: Sequence[StoredAuditRecord], keyed: list[bool], last: int, result: Verification
) -> None:
    span = f"records 1..{last}"
    if _sealed(records, keyed, last):
        result.notes.append(
            f"{span} were written before the audit chain was keyed (plain SHA-256) and "
            "sealed after a review: they cannot have changed since the seal, but nothing "
            "proves they were not forged before it"
        )
    else:
        result.issues.append(
            ChainIssue(
                last,
                f"{span} carry the old unkeyed hash: anyone who can write the metadata "
                "database could have forged them. Review them (`tidegate audit tail`, "
                "`search`), then seal them with `tidegate audit seal`",
            )
        )


def _sealed(records: Sequence[StoredAuditRecord], keyed: list[bool], through: int) -> bool:
    """Whether a keyed seal record covers the unkeyed records 1..through."""
    for stored, ok in zip(records, keyed, strict=True):
        if not ok or f'"{SEAL_OP}"' not in stored.body:
            continue
        try:
            detail = json.loads(stored.body).get("detail") or {}
        except (ValueError, AttributeError):
            continue
        sealed = detail.get("sealed_through") if isinstance(detail, dict) else None
        if detail.get("op") == SEAL_OP and isinstance(sealed, int) and sealed >= through:
            return True
    return False


def _mismatch(stored: StoredAuditRecord, after_keyed: bool) -> str:
    if after_keyed and chain_hash(stored.seq, stored.prev_hash, stored.body) == stored.hash:
        return (
            "carries an unkeyed hash after the chain was keyed: written without the audit "
            "key (forged)"
        )
    return "content does not match its keyed hash: edited, or written without the audit key"
