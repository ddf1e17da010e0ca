"""The online store contract, shared by the SQLite (embedded) and Redis backends.

Values are versioned: a product version is written in full under its own number and
made current by one atomic pointer flip, so a half-written version never serves.

Every value remembers when it was written (a full build or an incremental update in
place). A product may declare a TTL (`ttl: 1d` in its YAML): a value older than that
is **not served** (checked on every read, against the TTL configured now, so a TTL
added or shortened later applies at once). Backends also expire such values
physically (Redis `PX` on write; SQLite `purge_expired`), but correctness never
depends on that.

A build may write a version from many processes at once (the Spark store publishes
from its executors, store/spark/publish.py). Each process opens its own writer from a
`WriterSpec`: plain data (the backend's type, its settings, the TTLs), no open
connection, so it pickles to wherever the rows are. Whether a backend can take that is
a capability, not a guess: `shared` (many writer processes at once) and `same_host`
(those processes must run on this machine). The version flip (`activate`) stays one
step of the one process that runs the build, after every writer finished.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.store.online.codec import encode_row


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored value: the encoded row, the version it belongs to, when it was written."""

    value: str
    version: int
    written_at: float


@dataclass(frozen=True, slots=True)
class WriterSpec:
    """How to open a writer on an online store from another process: picklable data
    (`OnlineStore.writer_spec`, `open_writer`). `config` holds the backend's settings
    as plain values (a URL, an absolute path); `ttls` the product TTLs, which decide
    how long written values live."""

    kind: str
    config: Mapping[str, Any]
    ttls: Mapping[str, float]
    #: many processes may write at once (SQLite: WAL plus a busy wait; Redis: a server)
    shared: bool
    #: the writers must run on this host (a SQLite file; never a network filesystem)
    same_host: bool


class OnlineStore(ABC):
    #: name -> class, filled by subclasses; `open_online_store` picks by config type
    registry: dict[str, type[OnlineStore]] = {}
    kind: str = ""
    #: capabilities as data (CONVENTIONS.md)
    max_keys_per_read: int = 1_000
    #: a version may be written by many processes at once (see WriterSpec)
    shared: bool = False
    #: ... but only by processes on this host
    same_host: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            OnlineStore.registry[cls.kind] = cls

    def __init__(self, ttls: Mapping[str, float] | None = None) -> None:
        self._ttls: dict[str, float] = dict(ttls or {})

    # ---------------------------------------------------------------- TTL

    def set_ttl(self, product: str, seconds: float | None) -> None:
        """Values of `product` older than `seconds` are not served (None: no TTL)."""
        if seconds is None:
            self._ttls.pop(product, None)
        elif seconds <= 0:
            raise ValueError(f"TTL of {product!r} must be positive, not {seconds}")
        else:
            self._ttls[product] = float(seconds)

    def ttl(self, product: str) -> float | None:
        return self._ttls.get(product)

    def _fresh_after(self, product: str, now: float | None = None) -> float | None:
        """Values written at or before this moment are expired (None: no TTL)."""
        ttl = self._ttls.get(product)
        if ttl is None:
            return None
        return (time.time() if now is None else now) - ttl

    # ---------------------------------------------------------------- contract

    @abstractmethod
    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        """Write (key, encoded row) pairs under `version`; not visible until `activate`."""

    @abstractmethod
    def activate(self, product: str, version: int) -> None:
        """Make `version` current in one step and forget older versions."""

    @abstractmethod
    def discard(self, product: str, version: int) -> None:
        """Forget what was written under a version that will never be activated (a
        failed build), unless it is the current one."""

    @abstractmethod
    def writer_config(self) -> dict[str, Any]:
        """This backend's settings as plain values, for `writer_spec`."""

    @classmethod
    @abstractmethod
    def from_writer_config(cls, config: Mapping[str, Any]) -> OnlineStore:
        """A store opened from `writer_config`'s values (in another process)."""

    def writer_spec(self) -> WriterSpec:
        """What another process needs to write versions into this store: picklable,
        holding no connection (`open_writer` opens one there)."""
        return WriterSpec(
            self.kind, self.writer_config(), dict(self._ttls), self.shared, self.same_host
        )

    @abstractmethod
    def current_version(self, product: str) -> int | None: ...

    @abstractmethod
    def read_entries(self, product: str, keys: Sequence[str]) -> dict[str, Entry]:
        """The unexpired entries of `keys` in the current version, seen at one moment."""

    async def aread_entries(self, product: str, keys: Sequence[str]) -> dict[str, Entry]:
        """`read_entries` for code on an event loop. The default reads in place: a local
        store (SQLite) answers in microseconds, less than a hand-off to a thread costs;
        a networked store (Redis) overrides it so the loop keeps serving meanwhile."""
        return self.read_entries(product, keys)

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release what `aread_entries` opened on the running event loop (the store stays
        usable: a later read opens again)."""

    @abstractmethod
    def upsert(self, product: str, rows: Iterable[tuple[str, str]]) -> int:
        """Change rows of the current version in place (incremental updates)."""

    @abstractmethod
    def delete(self, product: str, keys: Sequence[str]) -> int:
        """Remove keys from every version held (revocation and erasure)."""

    @abstractmethod
    def close(self) -> None: ...

    # ---------------------------------------------------------------- conveniences

    def read_entry(self, product: str, key: str) -> Entry | None:
        return self.read_entries(product, (key,)).get(key)

    def read(self, product: str, key: str) -> str | None:
        """The encoded row of `key` in the current version (None: absent or expired)."""
        entry = self.read_entry(product, key)
        return entry.value if entry is not None else None

    def read_many(self, product: str, keys: Sequence[str]) -> dict[str, str]:
        return {key: entry.value for key, entry in self.read_entries(product, keys).items()}

    def write_version(
        self, product: str, version: int, rows: Iterable[dict[str, Any]], key_column: str
    ) -> int:
        encoded = ((str(row[key_column]), encode_row(row)) for row in rows)
        return self.write_batch(product, version, encoded)

    @abstractmethod
    def keys(self, product: str) -> list[str]:
        """Every key of the product's current version (a scan: for indexes built once
        per version, e.g. pseudonyms, never per request)."""

    def purge_expired(self) -> int:
        """Physically remove expired values where the backend does not do it itself."""
        return 0


def open_writer(spec: WriterSpec) -> OnlineStore:
    """A store of its own for this process, opened from `spec` (close it when done)."""
    from tidegate.store.online import redis_store, sqlite_store  # noqa: F401  (registers)

    cls = OnlineStore.registry.get(spec.kind)
    if cls is None:
        raise LookupError(f"no online store of type {spec.kind!r} in this process")
    store = cls.from_writer_config(spec.config)
    for product, seconds in spec.ttls.items():
        store.set_ttl(product, seconds)
    return store


def open_online_store(
    config: Any, root: Any, ttls: Mapping[str, float] | None = None
) -> OnlineStore:
    from tidegate.store.online import redis_store, sqlite_store  # noqa: F401  (registers)

    cls = OnlineStore.registry[config.type]
    store: OnlineStore = cls.from_config(config, root)  # type: ignore[attr-defined]
    for product, seconds in (ttls or {}).items():
        store.set_ttl(product, seconds)
    return store
