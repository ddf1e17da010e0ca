"""The metadata store contract: runs, product versions, consent, audit, sync state, API keys.

Embedded it is one SQLite file; at scale PostgreSQL implements the same methods. The
domain logic (what a consent state means, how the audit chain is hashed) lives in
`privacy/` and `audit/`; this layer only stores and fetches, atomically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
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
    source_key: str | None = None  # the product key the row came from
    written_at: float | None = None


@dataclass(frozen=True)
class SyncRowError:
    """A row a destination refused, with its own message; retried until it lands or is
    dismissed (a dismissed row is skipped until its content changes)."""

    key: str
    subject: str | None
    row_hash: str
    message: str
    first_at: float
    last_at: float
    attempts: int
    dismissed_at: float | None = None


@dataclass(frozen=True)
class SubjectLocation:
    """Where one subject's row was written: which sync, destination and key, and when."""

    sync: str
    destination: str
    key: str
    written_at: float | None


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

    def append_audit_chained(
        self, chain: Callable[[StoredAuditRecord | None], list[StoredAuditRecord]]
    ) -> list[StoredAuditRecord]:
        """Append `chain(last record)` with no other append in between; return it.

        Backends override this with one transaction, so two processes writing the same
        log never pick the same sequence number; this default is for single writers.
        """
        records = chain(self.last_audit())
        self.append_audit(records)
        return records

    # --- sync state: what each sync wrote, by destination key (Arrow; see `sync_segments`)
    @abstractmethod
    def synced_state(
        self,
        sync: str,
        keys: Sequence[str] | None = None,
        source_keys: Sequence[str] | None = None,
    ) -> Any:
        """What a sync wrote, as a pyarrow Table (`sync_segments.STATE_COLUMNS`: key,
        row_hash, subject, source_key, written_at): every row, or when `keys` or
        `source_keys` is given only the rows whose key or source key is in them."""

    @abstractmethod
    def compact_sync_state(self, sync: str, max_segments: int) -> bool:
        """Rewrite a sync's state as one segment when it has more than `max_segments`;
        returns whether it did."""

    @abstractmethod
    def forget_sync(self, sync: str) -> None:
        """Drop everything recorded for a sync (state, in-flight batch, row errors,
        suppressions): as if it had never run. The destination is not touched."""

    def synced_rows(self, sync: str) -> dict[str, SyncedRow]:
        """The state as Python objects (small states, tests and the CLI)."""
        from tidegate.meta.sync_segments import to_synced_rows

        return {row.key: row for row in to_synced_rows(self.synced_state(sync))}

    def synced_count(self, sync: str) -> int:
        return int(self.synced_state(sync).num_rows)

    def synced_rows_matching(
        self, sync: str, keys: Sequence[str], source_keys: Sequence[str]
    ) -> dict[str, SyncedRow]:
        """State rows whose key is in `keys` or whose source key is in `source_keys`."""
        from tidegate.meta.sync_segments import to_synced_rows

        table = self.synced_state(sync, keys=list(keys), source_keys=list(source_keys))
        return {row.key: row for row in to_synced_rows(table)}

    def apply_synced(
        self, sync: str, upserted: Sequence[SyncedRow], deleted: Sequence[str]
    ) -> None:
        self.checkpoint_sync(sync, upserted=upserted, deleted=deleted)

    # --- sync runs: checkpoints, in-flight batches, row errors, suppressions, where data went
    @abstractmethod
    def set_sync_target(self, sync: str, destination: str) -> None:
        """Record which destination a sync writes to (for `subject_locations`)."""

    @abstractmethod
    def checkpoint_sync(
        self,
        sync: str,
        *,
        upserted: Sequence[SyncedRow] | Any = (),
        deleted: Sequence[str] = (),
        errors: Sequence[SyncRowError] = (),
        suppressed: Sequence[SyncedRow] = (),
        clear_inflight: bool = False,
        fresh: bool = False,
    ) -> None:
        """One transaction: rows written (their errors cleared), keys deleted, rows refused
        (attempts counted), keys suppressed, and the in-flight marker cleared.

        `upserted` is a sequence of `SyncedRow` or a pyarrow Table with the state
        columns (a sent batch's, without a row in Python). `fresh` promises that none of
        its keys is in the state yet (rows the diff found added), so reading the state
        back needs no de-duplication against older segments."""

    @abstractmethod
    def set_sync_inflight(self, sync: str, rows: Sequence[SyncedRow] | Any) -> None:
        """Mark a batch as being sent (before sending it, in modes that are not idempotent);
        `rows` as for `checkpoint_sync(upserted=...)`."""

    @abstractmethod
    def sync_inflight(self, sync: str) -> list[SyncedRow]: ...

    @abstractmethod
    def sync_row_errors(self, sync: str, include_dismissed: bool = False) -> list[SyncRowError]: ...

    @abstractmethod
    def dismiss_sync_errors(self, sync: str, keys: Sequence[str] | None, at: float) -> int:
        """Dismiss the open errors of these keys (all when None); returns how many."""

    @abstractmethod
    def sync_suppressions(self, sync: str) -> list[SyncedRow]: ...

    @abstractmethod
    def subject_locations(self, subject: str) -> list[SubjectLocation]: ...

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
