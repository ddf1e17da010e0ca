"""File destination: the synced rows as one Parquet, CSV or JSON-lines file.

The file always holds the destination's whole current content (like a table): each
`write` or `delete` applies to the rows in memory and replaces the file atomically
before returning, so a batch the engine checkpoints is on disk. Batches are large
(`max_batch_rows`), so a run rewrites the file a few times, not once per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    RowErrors,
    Written,
    register,
)
from tidegate.egress.destinations.files.formats import read_rows, write_rows
from tidegate.errors import TerminalDestinationError, TransientDestinationError


def _key_text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@register
class FileDestination(Destination):
    kind: ClassVar[str] = "file"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=500_000, supports_lookup=True
    )

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in {"parquet", "csv", "jsonl"}:
            raise TerminalDestinationError(f"file destination: unknown format {fmt!r}")
        self.path = path
        self.format = fmt
        self.key = ""
        self.columns: list[str] = []
        self._rows: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> FileDestination:
        path = Path(config.path)
        return cls(path if path.is_absolute() else root / path, config.resolved_format())

    def open(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        self.columns = list(columns)
        try:
            rows = read_rows(self.path, self.format)
        except (OSError, ValueError) as err:
            raise TerminalDestinationError(f"file {self.path}: cannot read it: {err}") from None
        self._rows = {_key_text(r[key]): r for r in rows if key in r}

    def _save(self) -> None:
        try:
            write_rows(self.path, self.format, list(self._rows.values()), self.columns)
        except OSError as err:
            raise TransientDestinationError(f"file {self.path}: {err}") from None
        except Exception as err:  # pyarrow refuses mixed types, etc.
            raise TerminalDestinationError(f"file {self.path}: {err}") from None

    def attach(self, columns: dict[str, str], key: str) -> None:
        self.open(columns, key)  # reading the file changes nothing

    def write(self, batch: Any, mode: str) -> Written:
        before = dict(self._rows)
        rejected: dict[int, str] = {}
        existed: set[int] = set()
        missing: set[int] = set()
        for index, row in enumerate(batch.to_pylist()):
            key = _key_text(row[self.key])
            exists = key in self._rows
            if mode == "insert" and exists:
                rejected[index] = f"file {self.path.name}: key {key} already exists"
                continue
            if mode == "update" and not exists:
                missing.add(index)
                continue
            if exists:
                existed.add(index)
            self._rows[key] = row
        try:
            self._save()
        except TerminalDestinationError:
            self._rows = before
            raise
        if rejected:
            raise RowErrors(rejected)
        return Written(frozenset(existed), frozenset(missing))

    def delete(self, keys: list[Any]) -> int:
        removed = sum(self._rows.pop(_key_text(k), None) is not None for k in keys)
        self._save()
        return removed

    def existing_keys(self, keys: list[Any]) -> set[str]:
        return {_key_text(k) for k in keys if _key_text(k) in self._rows}

    def read_all(self) -> list[dict[str, Any]]:
        return read_rows(self.path, self.format)

    def close(self) -> None:
        self._rows = {}

    def describe(self) -> str:
        return f"file:{self.path}"
