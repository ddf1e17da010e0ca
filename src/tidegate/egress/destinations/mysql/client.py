"""MariaDB / MySQL destination, through PyMySQL (pure Python: no client library to build).

Bulk path: one multi-row `INSERT … ON DUPLICATE KEY UPDATE` per batch (PyMySQL folds
`executemany` into multi-row statements of up to 1 MB), inside one transaction, so a
batch lands whole or not at all and an upsert batch retried after a crash changes
nothing twice. `update` stages the batch in a temporary table and joins it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    Written,
    register,
    setting,
)
from tidegate.egress.destinations.mysql.types import mysql_type, mysql_value, quote
from tidegate.errors import (
    ServiceUnavailableError,
    TerminalDestinationError,
    TransientDestinationError,
)
from tidegate.extras import require

# server and client error codes a retry can fix: too many connections, lock wait timeout,
# deadlock, cannot connect, server gone away, lost connection, server shutdown
TRANSIENT_CODES = {1040, 1205, 1213, 2003, 2006, 2013, 2055, 1053}


def connect_args(dsn: str) -> dict[str, Any]:
    """`mysql://user:password@host:3306/database` → PyMySQL connect() arguments."""
    parts = urlsplit(dsn)
    if parts.scheme not in {"mysql", "mariadb", "mysql+pymysql"}:
        raise TerminalDestinationError(
            f"MySQL destination: {parts.scheme!r} DSN; expected mysql://user:password@host/db"
        )
    database = parts.path.lstrip("/")
    if not database:
        raise TerminalDestinationError("MySQL destination: the DSN names no database")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": database,
        "charset": "utf8mb4",
        "autocommit": False,
        "connect_timeout": 10,
        "read_timeout": 300,
        "write_timeout": 300,
        "init_command": (
            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), time_zone = '+00:00'"
        ),
    }


@register
class MysqlDestination(Destination):
    kind: ClassVar[str] = "mysql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=20_000, supports_lookup=True
    )

    def __init__(self, dsn: str, table: str) -> None:
        require("mysql", "pymysql")  # names the extra when it is missing
        import pymysql

        self.table = table
        self.key = ""
        self._absent = False  # attached (preview) to a table that does not exist yet
        self._args = connect_args(dsn)
        try:
            self._conn = pymysql.connect(**self._args)
        except pymysql.err.OperationalError as err:
            raise ServiceUnavailableError(f"cannot reach MySQL/MariaDB: {err.args[-1]}") from None

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> MysqlDestination:
        return cls(setting(config.dsn, config.dsn_env, "MySQL destination"), config.table)

    def _ensure_connection(self) -> None:
        """A fresh connection when the last one broke (the engine retries transient errors)."""
        import pymysql

        if self._conn.open:
            return
        try:
            self._conn = pymysql.connect(**self._args)
        except pymysql.err.OperationalError as err:
            raise TransientDestinationError(f"MySQL: cannot reconnect: {err.args[-1]}") from None

    def _error(self, err: Exception) -> Exception:
        import pymysql

        code = err.args[0] if err.args and isinstance(err.args[0], int) else None
        message = f"MySQL: {err.args[-1] if err.args else err}"
        if isinstance(err, pymysql.err.InterfaceError) or code in TRANSIENT_CODES:
            return TransientDestinationError(message)
        return TerminalDestinationError(message)

    def _run(self, statements: list[tuple[str, list[Any] | None]]) -> int:
        """Run statements (executemany when given rows) in one transaction; typed errors."""
        import pymysql

        affected = 0
        try:
            self._ensure_connection()
            with self._conn.cursor() as cur:
                for sql, rows in statements:
                    if rows is None:
                        cur.execute(sql)
                    elif rows:
                        cur.executemany(sql, rows)
                    affected += max(cur.rowcount, 0)
            self._conn.commit()
        except pymysql.err.Error as err:
            with contextlib.suppress(pymysql.err.Error):
                self._conn.rollback()
            raise self._error(err) from None
        return affected

    def open(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        defs = ", ".join(
            f"{quote(name)} {mysql_type(kind, is_key=name == key)}"
            f"{' PRIMARY KEY' if name == key else ''}"
            for name, kind in columns.items()
        )
        self._run(
            [
                (
                    f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({defs})"
                    " DEFAULT CHARSET = utf8mb4",
                    None,
                )
            ]
        )

    def attach(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        found = self._execute(
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name = %s",
            [self.table],
            fetch=True,
        )
        self._absent = not found

    def write(self, batch: Any, mode: str) -> Written:
        """Which rows it held is looked up first (by primary key); the write itself is one
        transaction, so what it held is what it updated unless another writer races it."""
        names = list(batch.column_names)
        records = batch.to_pylist()
        rows = [[mysql_value(row[n]) for n in names] for row in records]
        existed: frozenset[int] = frozenset()
        if mode != "insert":
            keys = [row[self.key] for row in records]
            held = self.existing_keys(keys)
            existed = frozenset(i for i, k in enumerate(keys) if str(k) in held)
        missing = frozenset(range(len(rows))) - existed if mode == "update" else frozenset()
        cols = ", ".join(quote(n) for n in names)
        marks = ", ".join("%s" for _ in names)
        others = [n for n in names if n != self.key]
        insert = f"INSERT INTO {quote(self.table)} ({cols}) VALUES ({marks})"
        if mode == "insert":
            self._run([(insert, rows)])
            return Written()
        if mode == "update":
            stage = quote("tidegate_stage")
            sets = ", ".join(f"t.{quote(n)} = s.{quote(n)}" for n in others)
            self._run(
                [
                    (
                        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} LIKE {quote(self.table)}",
                        None,
                    ),
                    (f"DELETE FROM {stage}", None),
                    (f"INSERT INTO {stage} ({cols}) VALUES ({marks})", rows),
                    (
                        f"UPDATE {quote(self.table)} t JOIN {stage} s"
                        f" ON t.{quote(self.key)} = s.{quote(self.key)} SET {sets}",
                        None,
                    ),
                ]
            )
            return Written(existed, missing)
        updates = ", ".join(f"{quote(n)} = VALUES({quote(n)})" for n in others) or (
            f"{quote(self.key)} = {quote(self.key)}"
        )
        self._run([(f"{insert} ON DUPLICATE KEY UPDATE {updates}", rows)])
        return Written(existed)

    def delete(self, keys: list[Any]) -> int:
        removed = 0
        for start in range(0, len(keys), 1000):
            chunk = [mysql_value(k) for k in keys[start : start + 1000]]
            marks = ", ".join("%s" for _ in chunk)
            removed += len(
                self._execute(
                    f"DELETE FROM {quote(self.table)} WHERE {quote(self.key)} IN ({marks})",
                    chunk,
                    fetch=False,
                )
            )
        return removed

    def _execute(self, sql: str, params: list[Any], *, fetch: bool) -> list[Any]:
        """One statement in its own transaction: the fetched rows, or one None per row hit."""
        import pymysql

        try:
            self._ensure_connection()
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                result = list(cur.fetchall()) if fetch else [None] * max(cur.rowcount, 0)
            self._conn.commit()
        except pymysql.err.Error as err:
            self._conn.rollback()
            raise self._error(err) from None
        return result

    def existing_keys(self, keys: list[Any]) -> set[str]:
        found: set[str] = set()
        if self._absent:
            return found
        for start in range(0, len(keys), 1000):
            chunk = [str(k) for k in keys[start : start + 1000]]
            marks = ", ".join("%s" for _ in chunk)
            rows = self._execute(
                f"SELECT {quote(self.key)} FROM {quote(self.table)}"
                f" WHERE {quote(self.key)} IN ({marks})",
                chunk,
                fetch=True,
            )
            found.update(str(row[0]) for row in rows)
        return found

    def read_all(self) -> list[dict[str, Any]]:
        import pymysql.cursors

        self._ensure_connection()
        with self._conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute(f"SELECT * FROM {quote(self.table)}")
            rows = [dict(row) for row in cur.fetchall()]
        self._conn.commit()
        return rows

    def close(self) -> None:
        import pymysql

        with contextlib.suppress(pymysql.err.Error):
            self._conn.close()

    def describe(self) -> str:
        return f"mysql:{self._args['database']}.{self.table}"
