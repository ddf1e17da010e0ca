"""PostgreSQL destination: COPY into a temporary staging table, then one set-based merge.

COPY is the fastest way rows enter PostgreSQL; merging from staging with
`INSERT … ON CONFLICT` keeps the write idempotent, so a batch retried after a crash
changes nothing twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import Capabilities, Destination, register, setting
from tidegate.errors import (
    ServiceUnavailableError,
    TerminalDestinationError,
    TransientDestinationError,
)


def pg_type(sql_type: str) -> str:
    base = sql_type.upper().strip()
    mapping = {
        "VARCHAR": "TEXT",
        "TEXT": "TEXT",
        "DOUBLE": "DOUBLE PRECISION",
        "FLOAT": "REAL",
        "TINYINT": "SMALLINT",
        "HUGEINT": "NUMERIC",
        "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
        "TIMESTAMPTZ": "TIMESTAMPTZ",
        "UBIGINT": "NUMERIC",
    }
    return mapping.get(base, base)


def _flat(batch: Any) -> bool:
    import pyarrow as pa

    return not any(pa.types.is_nested(f.type) or pa.types.is_binary(f.type) for f in batch.schema)


def _copy_rows(cur: Any, copy_sql: Any, batch: Any) -> None:
    """COPY a batch: Arrow writes it as CSV in C (the fast path, as a raw COPY would);
    nested or binary columns go row by row through psycopg's adapters."""
    from psycopg import sql

    if _flat(batch):
        import io

        import pyarrow.csv as pv

        buffer = io.BytesIO()
        pv.write_csv(batch, buffer, pv.WriteOptions(include_header=False))
        with cur.copy(sql.Composed([copy_sql, sql.SQL(" (FORMAT csv)")])) as copy:
            copy.write(buffer.getbuffer())
        return
    names = list(batch.column_names)
    with cur.copy(copy_sql) as copy:
        for row in batch.to_pylist():
            copy.write_row([row[n] for n in names])


@register
class PostgresDestination(Destination):
    kind: ClassVar[str] = "postgres"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=50_000, supports_lookup=True
    )

    def __init__(self, dsn: str, table: str, schema: str = "public") -> None:
        import psycopg

        self.table = table
        self.schema = schema
        self.key = ""
        try:
            self._conn = psycopg.connect(dsn, connect_timeout=10, autocommit=False)
        except psycopg.OperationalError as err:
            raise ServiceUnavailableError(f"cannot reach PostgreSQL: {err}") from None

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> PostgresDestination:
        dsn = setting(config.dsn, config.dsn_env, "PostgreSQL destination")
        return cls(dsn, config.table, config.schema_name)

    def _ident(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema, self.table)

    def open(self, columns: dict[str, str], key: str) -> None:
        from psycopg import sql

        self.key = key
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(pg_type(kind)),
                sql.SQL(" PRIMARY KEY" if name == key else ""),
            )
            for name, kind in columns.items()
        )
        with self._conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self._ident(), defs))
        self._conn.commit()

    def write(self, batch: Any, mode: str) -> int:
        import psycopg
        from psycopg import sql

        names = list(batch.column_names)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        stage = sql.Identifier("tidegate_stage")
        others = [n for n in names if n != self.key]
        if mode == "insert":
            merge = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                self._ident(), cols, cols, stage
            )
        elif mode == "update":
            merge = sql.SQL("UPDATE {} t SET {} FROM {} s WHERE t.{} = s.{}").format(
                self._ident(),
                sql.SQL(", ").join(
                    sql.SQL("{} = s.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in others
                ),
                stage,
                sql.Identifier(self.key),
                sql.Identifier(self.key),
            )
        else:
            merge = sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
            ).format(
                self._ident(),
                cols,
                cols,
                stage,
                sql.Identifier(self.key),
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in others
                ),
            )
        try:
            with self._conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS"
                    ).format(stage, self._ident())
                )
                _copy_rows(cur, sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols), batch)
                cur.execute(merge)
                written = cur.rowcount
            self._conn.commit()
        except psycopg.OperationalError as err:
            self._conn.rollback()
            raise TransientDestinationError(f"PostgreSQL: {err}") from None
        except psycopg.Error as err:
            self._conn.rollback()
            raise TerminalDestinationError(f"PostgreSQL: {err}") from None
        return int(written)

    def delete(self, keys: list[Any]) -> int:
        import psycopg
        from psycopg import sql

        if not keys:
            return 0
        try:
            with self._conn.cursor() as cur:
                # typed keys compare on the primary key's index; text keys as text
                typed = all(isinstance(k, int) for k in keys)
                template = (
                    "DELETE FROM {} WHERE {} = ANY(%s)"
                    if typed
                    else ("DELETE FROM {} WHERE {}::text = ANY(%s)")
                )
                cur.execute(
                    sql.SQL(template).format(self._ident(), sql.Identifier(self.key)),
                    (list(keys) if typed else [str(k) for k in keys],),
                )
                removed = cur.rowcount
            self._conn.commit()
        except psycopg.Error as err:
            self._conn.rollback()
            raise TransientDestinationError(f"PostgreSQL: {err}") from None
        return int(removed)

    def existing_keys(self, keys: list[Any]) -> set[str]:
        from psycopg import sql

        with self._conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {}::text FROM {} WHERE {}::text = ANY(%s)").format(
                    sql.Identifier(self.key), self._ident(), sql.Identifier(self.key)
                ),
                ([str(k) for k in keys],),
            )
            found = {str(row[0]) for row in cur.fetchall()}
        self._conn.commit()
        return found

    def read_all(self) -> list[dict[str, Any]]:
        from psycopg import sql
        from psycopg.rows import dict_row

        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {}").format(self._ident()))
            rows = list(cur.fetchall())
        self._conn.commit()
        return rows

    def close(self) -> None:
        self._conn.close()

    def describe(self) -> str:
        return f"postgres:{self.schema}.{self.table}"
