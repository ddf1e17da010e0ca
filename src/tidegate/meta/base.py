"""The metadata store contract: runs, product versions, consent, audit, sync state, API keys.

Embedded it is one SQLite file; at scale PostgreSQL implements the same methods. The
domain logic (what a consent state means, how the audit chain is hashed) lives in
`privacy/` and `audit/`; this layer only stores and fetches, atomically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProductVersion:
    product: str
    version: int
    table: str
    rows: int
    built_at: float
    status: str


@dataclass(frozen=True)
class ConsentRow:
    """One ledger entry as stored; `seq` orders entries recorded at the same instant."""

    seq: int
    subject: str
    purpose: str
    action: str
    occurred_at: float
    source: str
    evidence: str
    expires_at: float | None
    recorded_at: float


@dataclass(frozen=True)
class StoredAuditRecord:
    seq: int
    body: str  # canonical JSON of the record
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    secret_hash: str
    principal: str
    roles: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class SyncedRow:
    key: str
    row_hash: str
    subject: str | None


class MetadataStore(ABC):
    """Durable metadata. Each method is one transaction."""

    # --- runs and versions
    @abstractmethod
    def start_run(self, kind: str, target: str) -> int: ...

    @abstractmethod
    def finish_run(
        self, run_id: int, status: str, stats: dict[str, Any], error: str = ""
    ) -> None: ...

    @abstractmethod
    def runs(
        self, kind: str | None = None, target: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def next_version(self, product: str) -> int: ...

    @abstractmethod
    def publish_version(self, version: ProductVersion) -> None:
        """Record `version` as the live one for its product."""

    @abstractmethod
    def live_version(self, product: str) -> ProductVersion | None: ...

    @abstractmethod
    def versions(self, product: str) -> list[ProductVersion]: ...

    # --- consent ledger (append-only) and its derived state
    @abstractmethod
    def append_consent(self, rows: Sequence[ConsentRow]) -> list[int]:
        """Append entries (their `seq` is ignored and assigned); return the new seqs."""

    @abstractmethod
    def consent_history(self, subject: str) -> list[ConsentRow]: ...

    @abstractmethod
    def consent_rows(self, after_seq: int = 0) -> Iterable[ConsentRow]:
        """Entries after `after_seq`, in ledger order: how in-memory views stay current."""

    # --- audit log (append-only, hash-chained by the caller)
    @abstractmethod
    def last_audit(self) -> StoredAuditRecord | None: ...

    @abstractmethod
    def append_audit(self, records: Sequence[StoredAuditRecord]) -> None: ...

    @abstractmethod
    def audit_records(
        self, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredAuditRecord]: ...

    # --- sync state: what each sync wrote, by destination key
    @abstractmethod
    def synced_rows(self, sync: str) -> dict[str, SyncedRow]: ...

    @abstractmethod
    def apply_synced(
        self, sync: str, upserted: Sequence[SyncedRow], deleted: Sequence[str]
    ) -> None: ...

    # --- API keys (hashed)
    @abstractmethod
    def add_api_key(self, row: ApiKeyRow) -> None: ...

    @abstractmethod
    def api_key(self, key_id: str) -> ApiKeyRow | None: ...

    @abstractmethod
    def api_keys(self) -> list[ApiKeyRow]: ...

    @abstractmethod
    def revoke_api_key(self, key_id: str, at: float) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...
