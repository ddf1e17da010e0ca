"""The metadata store contract: runs, product versions, consent, audit, sync state, API keys.

Embedded it is one SQLite file; at scale PostgreSQL implements the same methods. The
domain logic (what a consent state means, how the audit chain is hashed) lives in
`privacy/` and `audit/`; this layer only stores and fetches, atomically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidegate.meta.parts import (
        CdcPositionStore,
        DeadLetterStore,
        FreshnessStore,
        ObservationStore,
    )


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
    #: every subject the record carried, stored beside it in `audit_subjects` when the
    #: record is appended (not part of the body, whose `subjects` may be a sample); empty
    #: when read back
    subjects: tuple[str, ...] = field(default=(), compare=False, repr=False)
    subject_type: str = field(default="", compare=False)


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


@dataclass(frozen=True)
class MetadataCapabilities:
    """What a backend can promise, as data (code branches on these, never on the type)."""

    shared_across_hosts: bool  # processes on several machines may share it
    secure_delete: bool  # deleted values are overwritten in place (not left in free pages)


class MetadataStore(ABC):
    """Durable metadata. Each method is one transaction.

    Many processes may write one store at once (the runtime, workers, API replicas, the
    CLI): sequence numbers (runs, consent, audit, dead letters) are never handed out
    twice, and an append is never lost.
    """

    capabilities: MetadataCapabilities

    # --- parts: small stores with their own tables (see `parts.py`)
    @property
    @abstractmethod
    def freshness(self) -> FreshnessStore: ...

    @property
    @abstractmethod
    def dead_letters(self) -> DeadLetterStore: ...

    @property
    @abstractmethod
    def observations(self) -> ObservationStore:
        """Observation time series, schema snapshots, quality results, alert dedup."""

    @property
    @abstractmethod
    def cdc_positions(self) -> CdcPositionStore: ...

    def where(self) -> str:
        """Where the metadata lives, for people (a path, or host and schema; no secret)."""
        return type(self).__name__

    # --- change detection for caches
    @abstractmethod
    def change_token(self) -> int:
        """A number that changes whenever consent, API keys or tombstones change, in any
        process: bumped in the same transaction as those writes, never by audit appends,
        runs or sync state. Cheap, so a cache may ask before every read it serves."""

    @abstractmethod
    def schema_version(self) -> int:
        """The latest migration applied (see `migrations`)."""

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

    def finished_runs(self) -> list[tuple[str, str, str, float]]:
        """(kind, target, status, seconds) of every finished run (metrics)."""
        found = self.runs(limit=1_000_000)
        return [
            (r["kind"], r["target"], r["status"], float(r["finished_at"] - r["started_at"]))
            for r in found
            if r["finished_at"] is not None
        ]

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

    # --- every subject an audit record carried (`audit_subjects`)
    @abstractmethod
    def audit_subject_seqs(self, subject_key: str, subject_type: str | None = None) -> list[int]:
        """Sequence numbers of the records that carried `subject_key` (of `subject_type`
        when given; '' is a record that named no type), in order."""

    @abstractmethod
    def redact_audit_subjects(
        self, subject_key: str, subject_type: str | None, pseudonym: str
    ) -> int:
        """Name the subject by `pseudonym` wherever `audit_subjects` holds its key (of
        `subject_type`, or of any type when None); returns how many entries changed."""

    # --- the audit anchor's storage (its content and signature: `audit/anchor.py`)
    @abstractmethod
    def audit_anchor(self) -> str | None:
        """The stored anchor, or None when none was stored yet."""

    @abstractmethod
    def move_audit_anchor(self, body: str, expected: str | None) -> bool:
        """Store `body` if the anchor is still `expected` (None: absent); False when
        another writer moved it first (compare-and-set: anchors never move backwards
        because of a race)."""

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

    # --- erasure (see `privacy/tombstones.ErasureStore` for what each is for)
    @abstractmethod
    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool:
        """Record an erased subject by its keyed hash; False when it was already there."""

    @abstractmethod
    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]:
        """(seq, subject hash, erased at) of tombstones after `after_seq`, in order."""

    @abstractmethod
    def erase_subject_rows(
        self,
        subject: str,
        pseudonym: str,
        digest: Callable[[str], str],
        values: Sequence[str] = (),
        *,
        syncs: Sequence[str] | None = None,
        consent: bool = True,
    ) -> dict[str, int]:
        """One transaction: the subject's consent entries kept under `pseudonym` with
        their evidence replaced by `digest(evidence)` (unless `consent` is False); their
        sync-state rows deleted (of `syncs` only, when given)."""

    @abstractmethod
    def redact_audit(self, bodies: Mapping[int, str]) -> int: ...

    @abstractmethod
    def redact_runs(self, stats: Mapping[int, tuple[str, str]]) -> int: ...

    @abstractmethod
    def runs_text(self) -> Iterator[tuple[int, str, str]]: ...

    @abstractmethod
    def redact_observations(self, columns: Sequence[tuple[str, str]], value: float) -> int: ...

    @abstractmethod
    def erasing(self) -> AbstractContextManager[None]:
        """A block in which deletes overwrite their data where the backend can."""

    @abstractmethod
    def close(self) -> None: ...
