"""The online store contract, shared by the SQLite (embedded) and Redis backends.

Values are versioned: a product version is written in full under its own number and
made current by one atomic pointer flip, so a half-written version never serves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from tidegate.store.online.codec import encode_row


class OnlineStore(ABC):
    #: name -> class, filled by subclasses; `open_online_store` picks by config type
    registry: dict[str, type[OnlineStore]] = {}
    kind: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            OnlineStore.registry[cls.kind] = cls

    @abstractmethod
    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        """Write (key, encoded row) pairs under `version`; not visible until `activate`."""

    @abstractmethod
    def activate(self, product: str, version: int) -> None:
        """Make `version` current in one step and forget older versions."""

    @abstractmethod
    def current_version(self, product: str) -> int | None: ...

    @abstractmethod
    def read(self, product: str, key: str) -> str | None:
        """The encoded row of `key` in the current version."""

    @abstractmethod
    def read_many(self, product: str, keys: Sequence[str]) -> dict[str, str]: ...

    @abstractmethod
    def upsert(self, product: str, rows: Iterable[tuple[str, str]]) -> int:
        """Change rows of the current version in place (incremental updates)."""

    @abstractmethod
    def delete(self, product: str, keys: Sequence[str]) -> int:
        """Remove keys from every version held (revocation and erasure)."""

    @abstractmethod
    def close(self) -> None: ...

    def write_version(
        self, product: str, version: int, rows: Iterable[dict[str, Any]], key_column: str
    ) -> int:
        encoded = ((str(row[key_column]), encode_row(row)) for row in rows)
        return self.write_batch(product, version, encoded)


def open_online_store(config: Any, root: Any) -> OnlineStore:
    from tidegate.store.online import redis_store, sqlite_store  # noqa: F401  (registers)

    cls = OnlineStore.registry[config.type]
    return cls.from_config(config, root)  # type: ignore[attr-defined,no-any-return]
