"""SQLite destination: a table in a local database file (the demo's "CRM")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import Capabilities, Destination, Written, register
from tidegate.errors import TerminalDestinationError, TransientDestinationError
from tidegate.private import private_dir, private_file


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_type(sql_type: str) -> str:
    base = sql_type.upper()
    if "INT" in base:
        return "INTEGER"
    if base.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC")):
        return "REAL"
    return "TEXT"


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@register
class SqliteDestination(Destination):
    kind: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=10_000, supports_lookup=True
    )

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self.table = table
        self.key = ""
        self.columns: list[str] = []
        self._absent = False  # attached (preview) to a table that does not exist yet
        private_dir(path.parent)
        private_file(path, side_files=True, create=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> SqliteDestination:
        path = Path(config.path)
        return cls(path if path.is_absolute() else root / path, config.table)

    def open(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        self.columns = list(columns)
        defs = ", ".join(
            f"{_q(c)} {_sqlite_type(t)}{' PRIMARY KEY' if c == key else ''}"
            for c, t in columns.items()
        )
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {_q(self.table)} ({defs})")
        self._absent = False

    def attach(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        self.columns = list(columns)
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        self._absent = found is None

    def write(self, batch: Any, mode: str) -> Written:
        names = list(batch.column_names)
        rows = [tuple(_plain(v) for v in row.values()) for row in batch.to_pylist()]
        keys = [row[names.index(self.key)] for row in rows]
        cols = ", ".join(_q(n) for n in names)
        marks = ", ".join("?" for _ in names)
        if mode == "insert":
            sql = f"INSERT INTO {_q(self.table)} ({cols}) VALUES ({marks})"
        elif mode == "update":
            sets = ", ".join(f"{_q(n)} = ?" for n in names if n != self.key)
            sql = f"UPDATE {_q(self.table)} SET {sets} WHERE {_q(self.key)} = ?"
            index = names.index(self.key)
            rows = [(*[v for i, v in enumerate(r) if i != index], r[index]) for r in rows]
        else:
            updates = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in names if n != self.key)
            sql = (
                f"INSERT INTO {_q(self.table)} ({cols}) VALUES ({marks}) "
                f"ON CONFLICT ({_q(self.key)}) DO UPDATE SET {updates}"
            )
        existed: set[int] = set()
        try:
            self._db.execute("BEGIN")
            if mode != "insert":  # in the transaction: what it held is what gets updated
                held = self.existing_keys(keys)
                existed = {i for i, k in enumerate(keys) if str(k) in held}
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as err:
            self._db.execute("ROLLBACK")
            raise TransientDestinationError(f"SQLite {self.path}: {err}") from None
        except sqlite3.DatabaseError as err:
            self._db.execute("ROLLBACK")
            raise TerminalDestinationError(f"SQLite {self.path}: {err}") from None
        missing = set(range(len(rows))) - existed if mode == "update" else set()
        return Written(frozenset(existed), frozenset(missing))

    def delete(self, keys: list[Any]) -> int:
        try:
            self._db.execute("BEGIN")
            cursor = self._db.executemany(
                f"DELETE FROM {_q(self.table)} WHERE {_q(self.key)} = ?", [(k,) for k in keys]
            )
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise TransientDestinationError(f"SQLite {self.path}: {err}") from None
        return int(cursor.rowcount)

    def existing_keys(self, keys: list[Any]) -> set[str]:
        found: set[str] = set()
        if self._absent:
            return found
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cursor = self._db.execute(
                f"SELECT {_q(self.key)} FROM {_q(self.table)} WHERE {_q(self.key)} IN ({marks})",
                chunk,
            )
            found.update(str(row[0]) for row in cursor.fetchall())
        return found

    def read_all(self) -> list[dict[str, Any]]:
        cursor = self._db.execute(f"SELECT * FROM {_q(self.table)}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self._db.close()

    def describe(self) -> str:
        return f"sqlite:{self.path}#{self.table}"
