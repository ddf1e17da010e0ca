"""PostgreSQL destination: COPY into a temporary staging table, then one set-based merge.

COPY is the fastest way rows enter PostgreSQL; merging from staging with
`INSERT … ON CONFLICT` keeps the write idempotent, so a batch retried after a crash
changes nothing twice.

Straight COPY, no staging: an `insert` batch means exactly what a COPY into the table
means (a key already held fails the batch, as the `INSERT … SELECT` from staging
would). An `upsert` batch is also copied straight into the table while the table has
a unique index on the key and no batch of this session has met a key it holds (an
initial load: half the work of staging then merging). A batch that does meet one fails
as a whole with a unique violation, is rolled back, and goes through staging and
`ON CONFLICT` instead, as does every later batch of the session: the result is the
same rows either way.

Rows go out in PostgreSQL's binary COPY format, encoded from Arrow in native code by
`pgpq` (no text to format and parse: the fastest way in), when every column's Arrow
type encodes to exactly the type the table's column has (checked against the catalog
once per session, see `_binary_ok`); otherwise as CSV written by Arrow (in C). Either
way in chunks, so PostgreSQL parses one chunk while the next is encoded. Nested or
binary columns not matched go row by row through psycopg's adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    Written,
    register,
    setting,
)
from tidegate.errors import (
    ServiceUnavailableError,
    TerminalDestinationError,
    TransientDestinationError,
)
from tidegate.extras import require


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


#: the table's column types (pg_type.typname) a pgpq encoding may go into, by the
#: encoding pgpq infers from the Arrow type (its DDL name); anything else goes as CSV
BINARY_TARGETS: dict[str, frozenset[str]] = {
    "BOOL": frozenset({"bool"}),
    "INT2": frozenset({"int2"}),
    "INT4": frozenset({"int4"}),
    "INT8": frozenset({"int8"}),
    "FLOAT4": frozenset({"float4"}),
    "FLOAT8": frozenset({"float8"}),
    "TEXT": frozenset({"text", "varchar"}),  # varchar's binary input is text's, length-checked
    "DATE": frozenset({"date"}),
}


def binary_plan(schema: Any, column_types: dict[str, str]) -> Any | None:
    """A pgpq encoder for batches of `schema` into columns of `column_types` (name ->
    typname), or None when any column would not land as the very same value as by CSV:
    an unknown or mismatched type, or a timestamp whose zone does not match the column's
    (naive Arrow times into `timestamp`, zoned (UTC) ones into `timestamptz`)."""
    import pyarrow as pa

    try:
        from pgpq import ArrowToPostgresBinaryEncoder
    except ImportError:  # the postgres extra without pgpq: CSV still works
        return None
    for field in schema:
        target = column_types.get(field.name)
        if target is None:
            return None
        if pa.types.is_timestamp(field.type):
            wanted = "timestamptz" if field.type.tz else "timestamp"
            if target != wanted or field.type.unit == "ns":
                return None
            continue
    try:
        encoder = ArrowToPostgresBinaryEncoder(schema)
    except Exception:  # a type pgpq cannot encode
        return None
    for field, column in zip(schema, encoder.schema().columns, strict=True):
        if pa.types.is_timestamp(field.type):
            continue
        ddl = (column.data_type.ddl() or "").upper()
        if column_types[field.name] not in BINARY_TARGETS.get(ddl, frozenset()):
            return None
    return encoder


def _flat(batch: Any) -> bool:
    import pyarrow as pa

    return not any(pa.types.is_nested(f.type) or pa.types.is_binary(f.type) for f in batch.schema)


COPY_CHUNK_ROWS = 16_384


def _copy_rows(cur: Any, copy_sql: Any, batch: Any, encoder: Any = None) -> None:
    """COPY a batch: binary from pgpq's `encoder` when there is one, else CSV written by
    Arrow in C, chunk by chunk; nested or binary columns go row by row through psycopg."""
    from psycopg import sql

    if encoder is not None:
        with cur.copy(sql.Composed([copy_sql, sql.SQL(" (FORMAT binary)")])) as copy:
            copy.write(encoder.write_header())
            for chunk in batch.to_batches(max_chunksize=COPY_CHUNK_ROWS):
                copy.write(encoder.write_batch(chunk))
            copy.write(encoder.finish())
        return
    if _flat(batch):
        import io

        import pyarrow.csv as pv

        options = pv.WriteOptions(include_header=False)
        with cur.copy(sql.Composed([copy_sql, sql.SQL(" (FORMAT csv)")])) as copy:
            for chunk in batch.to_batches(max_chunksize=COPY_CHUNK_ROWS):
                buffer = io.BytesIO()
                pv.write_csv(chunk, buffer, options)
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
        supports_upsert=True,
        supports_delete=True,
        max_batch_rows=500_000,
        preferred_batch_rows=100_000,
        supports_lookup=True,
        opens_concurrently=True,  # psycopg connections may change threads between uses
    )

    def __init__(self, dsn: str, table: str, schema: str = "public") -> None:
        require("postgres", "psycopg")  # names the extra when it is missing
        import psycopg

        self.table = table
        self.schema = schema
        self.key = ""
        self._copy_upserts = False  # upsert batches COPY straight in (see the module doc)
        self._absent = False  # attached (preview) to a table that does not exist yet
        self._column_types: dict[str, str] = {}  # name -> pg_type.typname, read at open
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
            self._copy_upserts = self._key_is_unique(cur)
            self._column_types = self._read_column_types(cur)
        self._conn.commit()

    def _read_column_types(self, cur: Any) -> dict[str, str]:
        """The table's columns and their types as the catalog has them (the table may
        predate this sync and differ from what `open` would create)."""
        cur.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t"
            " ON t.oid = a.atttypid WHERE a.attrelid = %s::regclass AND a.attnum > 0"
            " AND NOT a.attisdropped",
            (self._ident().as_string(self._conn),),
        )
        return {str(name): str(kind) for name, kind in cur.fetchall()}

    def _encoder(self, batch: Any) -> Any | None:
        """pgpq's binary encoder for this batch when its types match the table's."""
        return binary_plan(batch.schema, self._column_types) if _flat(batch) else None

    def _key_is_unique(self, cur: Any) -> bool:
        """Whether a unique index covers exactly the key column (so a COPY of a key the
        table holds fails instead of adding a second row)."""
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnkeyatts = 1"
            " AND i.indpred IS NULL AND a.attname = %s)",
            (self._ident().as_string(self._conn), self.key),
        )
        row = cur.fetchone()
        return bool(row and row[0])

    def attach(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        with self._conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (self._ident().as_string(self._conn),))
            row = cur.fetchone()
        self._conn.commit()
        self._absent = not (row and row[0])

    def write(self, batch: Any, mode: str) -> Written:
        import psycopg

        if mode == "insert" or (mode == "upsert" and self._copy_upserts):
            try:
                self._copy_straight(batch)
                return Written()  # a COPY into a unique key lands only new rows
            except psycopg.errors.UniqueViolation as err:
                self._conn.rollback()
                if mode == "insert":
                    raise TerminalDestinationError(f"PostgreSQL: {err}") from None
                self._copy_upserts = False  # the table holds keys: merge from now on
            except psycopg.OperationalError as err:
                self._conn.rollback()
                raise TransientDestinationError(f"PostgreSQL: {err}") from None
            except psycopg.Error as err:
                self._conn.rollback()
                raise TerminalDestinationError(f"PostgreSQL: {err}") from None
        return self._merge(batch, mode)

    def _copy_straight(self, batch: Any) -> int:
        from psycopg import sql

        cols = sql.SQL(", ").join(sql.Identifier(n) for n in batch.column_names)
        with self._conn.cursor() as cur:
            _copy_rows(
                cur,
                sql.SQL("COPY {} ({}) FROM STDIN").format(self._ident(), cols),
                batch,
                self._encoder(batch),
            )
        self._conn.commit()
        return int(batch.num_rows)

    def _merge(self, batch: Any, mode: str) -> Written:
        """Stage and merge; RETURNING says which keys were updated (`xmax` is 0 on a row
        the statement inserted, the writing transaction's id on one it updated)."""
        import psycopg
        from psycopg import sql

        names = list(batch.column_names)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        stage = sql.Identifier("tidegate_stage")
        others = [n for n in names if n != self.key]
        key = sql.Identifier(self.key)
        if mode == "update":
            merge = sql.SQL(
                "UPDATE {} t SET {} FROM {} s WHERE t.{} = s.{} RETURNING t.{}::text, true"
            ).format(
                self._ident(),
                sql.SQL(", ").join(
                    sql.SQL("{} = s.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in others
                ),
                stage,
                key,
                key,
                key,
            )
        elif not others:  # nothing but the key: a key it holds is already as it should be
            merge = sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING"
                " RETURNING {}::text, false"
            ).format(self._ident(), cols, cols, stage, key, key)
        else:
            merge = sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
                " RETURNING {}::text, NOT (xmax = 0)"
            ).format(
                self._ident(),
                cols,
                cols,
                stage,
                key,
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in others
                ),
                key,
            )
        try:
            with self._conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS"
                    ).format(stage, self._ident())
                )
                _copy_rows(
                    cur,
                    sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols),
                    batch,
                    self._encoder(batch),
                )
                cur.execute(merge)
                touched = {str(k): bool(updated) for k, updated in cur.fetchall()}
            self._conn.commit()
        except psycopg.OperationalError as err:
            self._conn.rollback()
            raise TransientDestinationError(f"PostgreSQL: {err}") from None
        except psycopg.Error as err:
            self._conn.rollback()
            raise TerminalDestinationError(f"PostgreSQL: {err}") from None
        keys = [str(k) for k in batch.column(self.key).to_pylist()]
        if mode == "update":
            missing = frozenset(i for i, k in enumerate(keys) if k not in touched)
            return Written(frozenset(range(len(keys))) - missing, missing)
        if not others:  # DO NOTHING returns only the rows it inserted
            return Written(frozenset(i for i, k in enumerate(keys) if k not in touched))
        return Written(frozenset(i for i, k in enumerate(keys) if touched.get(k)))

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

        if self._absent:
            return set()
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
