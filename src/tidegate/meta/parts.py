"""Small stores the metadata store owns: freshness, dead letters, observations, CDC positions.

Each was once a table a domain module created in the metadata SQLite file itself; now
each is an interface here, implemented once for both SQL metadata backends
(`sql_parts.py`, the differences as data in a `SqlDialect`) and reached through
`MetadataStore` (`meta.freshness`, `meta.dead_letters`, `meta.observations`,
`meta.cdc_positions`). The domain modules (`observe/freshness.py`,
`ingest/deadletters.py`, `observe/timeseries.py`, `ingest/postgres_cdc.py`) keep what
the rows mean; these only store and fetch.

A part belongs to its metadata store: `close()` does nothing, unless the part was
opened on its own (`owning`), in which case it closes the store it came with.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from tidegate.meta.base import MetadataStore


class MetadataPart:
    _owned: MetadataStore | None = None

    def close(self) -> None:
        """Close the metadata store this part was opened with (`owning`), else nothing."""
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


P = TypeVar("P", bound=MetadataPart)


def owning(part: P, store: MetadataStore) -> P:
    """`part`, made to close `store` when it is closed (a store opened just for it)."""
    part._owned = store
    return part


# ---------------------------------------------------------------- freshness


@dataclass(frozen=True)
class Freshness:
    product: str
    mode: str
    last_update: float | None
    last_lag: float | None
    max_lag: float
    updates: int
    breaches: int
    stale_since: float | None

    def current_lag(self, now: float | None = None) -> float:
        """Seconds the product is behind now: 0 when nothing is waiting for it."""
        if self.stale_since is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.stale_since)


class FreshnessStore(MetadataPart, ABC):
    """One row per product: last update, its lag, the worst lag, breaches, stale since."""

    @abstractmethod
    def updated(self, product: str, mode: str, lag: float, slo: float) -> None:
        """An update landed with `lag` seconds (a breach when `lag > slo`); not stale now."""

    @abstractmethod
    def stale(self, product: str, mode: str, since: float) -> None:
        """Upstream changed at `since` (kept if an earlier unapplied change is recorded)."""

    @abstractmethod
    def all(self) -> dict[str, Freshness]: ...

    @abstractmethod
    def confirm(self, product: str, mode: str, at: float) -> None:
        """Nothing upstream changed: the product is current as of `at` (its
        `last_update`), unless a change waits for it (`stale_since` set, checked in the
        same statement, so a change marked meanwhile is never cleared). Not an update:
        `updates` and the lags stay."""

    @abstractmethod
    def sample(self, rows: Sequence[tuple[str, float, float, bool]]) -> None:
        """SLO history: (product, at, seconds covered, within SLO) samples."""

    @abstractmethod
    def compliance(self, since: float) -> dict[str, tuple[float, float]]:
        """Per product: (seconds within SLO, seconds sampled) since `since`."""

    @abstractmethod
    def prune_samples(self, before: float) -> None:
        """Forget samples taken before `before` (the history keeps a week)."""


# ---------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class DeadLetter:
    source: str
    reason: str
    payload: bytes | None
    via: str  # http, log, file, cdc, replay
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    at: float = 0.0
    id: int = 0
    replayed_at: float | None = None


class DeadLetterStore(MetadataPart, ABC):
    """Every event tidegate could not take; unique by (topic, partition, offset)."""

    @abstractmethod
    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store letters; one already stored for the same log position is kept, not doubled.
        Returns how many were new."""

    @abstractmethod
    def list(
        self,
        source: str | None = None,
        limit: int = 50,
        include_replayed: bool = False,
        after_id: int = 0,
    ) -> list[DeadLetter]: ...

    @abstractmethod
    def get(self, letter_id: int) -> DeadLetter | None: ...

    @abstractmethod
    def count(self, source: str | None = None, include_replayed: bool = False) -> int: ...

    @abstractmethod
    def counts_by_source(self) -> dict[str, int]:
        """Letters not replayed yet, by source."""

    @abstractmethod
    def mark_replayed(self, ids: Sequence[int]) -> None: ...

    @abstractmethod
    def update_reason(self, letter_id: int, reason: str) -> None: ...

    @abstractmethod
    def delete(self, ids: Sequence[int]) -> int:
        """Remove letters for good (erasure requests); returns how many were removed."""


# ---------------------------------------------------------------- observations


@dataclass(frozen=True)
class Point:
    at: float
    value: float
    version: int | None = None


@dataclass(frozen=True)
class SchemaSnapshot:
    product: str
    version: int | None
    at: float
    fingerprint: str
    columns: dict[str, str]


#: the columns of one quality result, in the order `add_quality` rows give them
QUALITY_COLUMNS = (
    "product",
    "version",
    "at",
    "check_name",
    "check_type",
    "severity",
    "col",
    "passed",
    "failing_rows",
    "observed",
    "expected",
    "table_name",
    "error",
)


class ObservationStore(MetadataPart, ABC):
    """Observations as time series (the five pillars), schema snapshots, quality results
    and alert deduplication."""

    @abstractmethod
    def add_points(
        self,
        product: str,
        version: int | None,
        at: float,
        kind: str,
        status: str,
        metrics: Iterable[tuple[str, str, float | None]],
    ) -> None:
        """One point per (metric, column, value); column '' for product-level metrics."""

    @abstractmethod
    def series(
        self,
        product: str,
        metric: str,
        col: str = "",
        *,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
        status: str | None = "live",
    ) -> list[Point]:
        """Points of one series in time order (points without a value left out)."""

    @abstractmethod
    def series_names(self, product: str) -> list[tuple[str, str]]:
        """(metric, column) of every series of a product."""

    @abstractmethod
    def add_schema(self, snapshot: SchemaSnapshot, status: str) -> None: ...

    @abstractmethod
    def last_schema(self, product: str, before: float | None = None) -> SchemaSnapshot | None:
        """The latest live snapshot (before `before` when given)."""

    @abstractmethod
    def add_quality(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Check results, each a tuple in `QUALITY_COLUMNS` order."""

    @abstractmethod
    def quality(self, product: str, version: int | None = None) -> list[dict[str, Any]]:
        """Check results of `version` (default: the latest version checked), as dicts
        keyed by `QUALITY_COLUMNS`, in the order they were added."""

    @abstractmethod
    def should_send(self, key: str, window: float, now: float | None = None) -> bool:
        """True (and remembered) unless `key` was sent less than `window` seconds ago;
        atomic, so two processes never both send the same alert."""


# ---------------------------------------------------------------- CDC positions


class CdcPositionStore(MetadataPart, ABC):
    """Per replication slot: whether its snapshot finished (a crash during it repeats it)."""

    @abstractmethod
    def snapshot_done(self, slot: str) -> bool: ...

    @abstractmethod
    def mark_snapshot(self, slot: str) -> None: ...

    @abstractmethod
    def forget(self, slot: str) -> None:
        """Forget the slot: its snapshot mark and its last reported state."""

    @abstractmethod
    def report(self, state: SlotState) -> None:
        """Keep what the capture last saw of a slot (replaces the previous report)."""

    @abstractmethod
    def states(self) -> list[SlotState]:
        """The last report of every slot, by slot name."""


@dataclass(frozen=True)
class SlotState:
    """A replication slot as its capture last saw it: `lag_bytes` of WAL not yet
    confirmed, `lag_seconds` since the oldest change not yet in the log (0 when caught
    up), and the error that stopped the capture, if any."""

    slot: str
    source: str
    confirmed_lsn: str | None
    lag_bytes: int | None
    lag_seconds: float | None
    error: str | None
    at: float
