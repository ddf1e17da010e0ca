"""The destination contract: a small base class, capabilities as data, a registry by name.

A destination needs little more than `open`, `write`, `delete` and `close`; what it can
do (upsert, delete, batch size, rate) is declared in `Capabilities` and the sync engine
branches on that, never on the destination's name. Third-party destinations register
through the `tidegate.destinations` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from tidegate.errors import TidegateError

ENTRY_POINT_GROUP = "tidegate.destinations"


@dataclass(frozen=True)
class Capabilities:
    supports_upsert: bool
    supports_delete: bool
    max_batch_rows: int
    rate_limit: float | None = None  # requests per second, None = unlimited


class Destination(ABC):
    """One sync target. `open` prepares it for rows of `columns` (name -> SQL type) keyed
    by `key`; `write` and `delete` take Arrow tables / key lists of at most
    `capabilities.max_batch_rows`."""

    kind: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]

    @abstractmethod
    def open(self, columns: dict[str, str], key: str) -> None: ...

    @abstractmethod
    def write(self, batch: Any, mode: str) -> int:
        """Write rows (a pyarrow Table) in `mode` insert, update or upsert; return rows written."""

    @abstractmethod
    def delete(self, keys: list[Any]) -> int: ...

    @abstractmethod
    def read_all(self) -> list[dict[str, Any]]:
        """Every row the destination holds (for tests, access requests and audits)."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.kind


_REGISTRY: dict[str, type[Destination]] = {}


def register(cls: type[Destination]) -> type[Destination]:
    _REGISTRY[cls.kind] = cls
    return cls


def destination_class(kind: str) -> type[Destination]:
    if kind not in _REGISTRY:
        _load_builtin()
    if kind not in _REGISTRY:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == kind:
                register(entry.load())
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise TidegateError(f"no destination type {kind!r} is installed") from None


def _load_builtin() -> None:
    from tidegate.egress.destinations import postgres, sqlite  # noqa: F401


def open_destination(config: Any, root: Path) -> Destination:
    cls = destination_class(config.type)
    return cls.from_config(config, root)  # type: ignore[attr-defined,no-any-return]
