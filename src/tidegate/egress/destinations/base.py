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

from tidegate.errors import TerminalDestinationError, TidegateError

ENTRY_POINT_GROUP = "tidegate.destinations"


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do; the sync engine and the conformance suite read only this."""

    supports_upsert: bool
    supports_delete: bool
    max_batch_rows: int
    rate_limit: float | None = None  # requests per second, None = unlimited
    # the batch size to use when neither the sync nor the project sets one (bulk loaders
    # such as COPY go faster with big batches); None: the project's default
    preferred_batch_rows: int | None = None
    modes: tuple[str, ...] = ("insert", "update", "upsert")
    # an insert of a key it already holds is rejected (tables with a primary key);
    # False for append-only logs, where an insert is one more event
    unique_keys: bool = True
    # `existing_keys` answers which keys it holds: how an insert batch cut short by a
    # crash is reconciled without sending a row twice
    supports_lookup: bool = False
    # `read_all` can read back what was written
    supports_read: bool = True
    # a delete is one more record (a tombstone) and the deleted record stays readable
    # until the destination itself cleans up (Kafka compaction): `retention` says when
    delete_keeps_history: bool = False
    # may be constructed and opened in one thread and used from another (a psycopg
    # connection may; a sqlite3 one may not): then a sync opens it while it diffs
    opens_concurrently: bool = False


@dataclass(frozen=True)
class Written:
    """What a destination confirms of one `write`, by row index in the batch: rows it
    already held (updated), and rows an `update` found absent (nothing written for them).
    Every other row of the batch is new (inserted). A destination that can tell returns
    this; one that cannot returns the number of rows it accepted, and the engine counts
    inserts and updates from its own record of what it wrote."""

    existed: frozenset[int] = frozenset()
    missing: frozenset[int] = frozenset()


class RowErrors(TerminalDestinationError):
    """Some rows of a batch were rejected, each with the destination's own message; the
    other rows of the batch were written. `rows` maps row index in the batch -> message."""

    code = "destination_row_errors"

    def __init__(self, rows: dict[int, str], summary: str = "") -> None:
        first = next(iter(rows.values()), "")
        super().__init__(summary or f"{len(rows)} rows rejected; first: {first}")
        self.rows = rows


class Destination(ABC):
    """One sync target. `open` prepares it for rows of `columns` (name -> SQL type) keyed
    by `key`; `write` and `delete` take Arrow tables / key lists of at most
    `capabilities.max_batch_rows`."""

    kind: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    sync_name: str = ""  # set by `open_destination`; some destinations name things after it

    @abstractmethod
    def open(self, columns: dict[str, str], key: str) -> None: ...

    @abstractmethod
    def write(self, batch: Any, mode: str) -> int | Written:
        """Write rows (a pyarrow Table) in `mode` insert, update or upsert; return which rows
        it held before and which an update did not find (`Written`), or the rows written."""

    @abstractmethod
    def delete(self, keys: list[Any]) -> int: ...

    @abstractmethod
    def read_all(self) -> list[dict[str, Any]]:
        """Every row the destination holds (for tests, access requests and audits)."""

    @abstractmethod
    def close(self) -> None: ...

    def attach(self, columns: dict[str, str], key: str) -> None:
        """Get ready to answer `existing_keys` without changing anything (no table is
        created): what a preview calls instead of `open`."""
        raise TerminalDestinationError(f"destination {self.kind!r} cannot look keys up")

    def existing_keys(self, keys: list[Any]) -> set[str]:
        """Which of `keys` the destination holds, as strings (when `supports_lookup`)."""
        raise TerminalDestinationError(f"destination {self.kind!r} cannot look keys up")

    def describe(self) -> str:
        return self.kind

    def retention(self) -> dict[str, str]:
        """Where `delete_keeps_history`: the settings that decide how long a deleted
        record stays readable (by name), for an erasure's report; {} when unknown."""
        return {}


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
    from tidegate.egress.destinations import (  # noqa: F401
        files,
        http,
        kafka,
        mysql,
        postgres,
        redis,
        sqlite,
    )


def setting(value: str | None, env: str | None, what: str) -> str:
    """A setting given in config or, for secrets, by the name of an environment variable."""
    import os

    if value:
        return value
    resolved = os.environ.get(env or "", "")
    if not resolved:
        raise TerminalDestinationError(f"{what}: environment variable {env} is unset or empty")
    return resolved


def open_destination(config: Any, root: Path, sync: str = "") -> Destination:
    cls = destination_class(config.type)
    destination: Destination = cls.from_config(config, root)  # type: ignore[attr-defined]
    destination.sync_name = sync  # after construction: plugins keep a 2-argument from_config
    return destination
