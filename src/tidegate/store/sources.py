"""Snapshot loads of operational sources into Arrow, shaped to the declared schema.

DuckDB reads files itself (fast, parallel). SQLite and PostgreSQL tables are read in
Python and handed over as Arrow batches: DuckDB's sqlite/postgres extensions would be
downloaded at run time, which a locked-down machine cannot do.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from tidegate.errors import ServiceUnavailableError, TidegateError
from tidegate.project.models import FileSource, PostgresTableSource, SqliteTableSource
from tidegate.project.project import Project, Source

BATCH_ROWS = 50_000


def file_select(project: Project, source: Source) -> str:
    """A DuckDB SELECT over the source file, casting each declared column to its type."""
    config = source.config
    assert isinstance(config, FileSource)
    path = project.path(config.path)
    if not path.exists():
        raise TidegateError(
            f"source {source.name!r}: file {config.path} not found "
            f"({source.doc.display}:{source.doc.line_of(('path',))})"
        )
    literal = str(path).replace("'", "''")
    reader = {
        "parquet": f"read_parquet('{literal}')",
        "csv": f"read_csv('{literal}', header = true, all_varchar = true)",
        "json": f"read_json_auto('{literal}')",
    }.get(config.resolved_format())
    if reader is None:
        raise TidegateError(f"source {source.name!r}: unsupported file format {config.format!r}")
    columns = ", ".join(
        f'CAST("{name}" AS {spec.type}) AS "{name}"' for name, spec in source.columns.items()
    )
    return f"SELECT {columns} FROM {reader}"


def read_table_source(project: Project, source: Source) -> Any:
    """A pyarrow Table for a SQLite or PostgreSQL source."""
    config = source.config
    if isinstance(config, SqliteTableSource):
        return _read_sqlite(project, source, config)
    if isinstance(config, PostgresTableSource):
        return _read_postgres(source, config)
    raise TypeError(f"not a table source: {type(config).__name__}")


def _arrow_from_rows(names: list[str], rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table(
        {name: pa.array(list(values)) for name, values in zip(names, columns, strict=True)}
    )


def _read_sqlite(project: Project, source: Source, config: SqliteTableSource) -> Any:
    path = project.path(config.path)
    if not path.exists():
        raise TidegateError(f"source {source.name!r}: SQLite file {config.path} not found")
    names = list(source.columns)
    quoted = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
    table = '"' + config.table.replace('"', '""') + '"'
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            rows = db.execute(f"SELECT {quoted} FROM {table}").fetchall()
        except sqlite3.Error as err:
            raise TidegateError(f"source {source.name!r}: {err}") from None
    return _arrow_from_rows(names, rows)


def _read_postgres(source: Source, config: PostgresTableSource) -> Any:
    from tidegate.extras import require

    require("postgres", "psycopg")
    import psycopg
    from psycopg import sql

    dsn = config.dsn or os.environ.get(config.dsn_env or "", "")
    if not dsn:
        raise TidegateError(
            f"source {source.name!r}: environment variable {config.dsn_env} is unset"
        )
    names = list(source.columns)
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.Identifier(config.schema_name),
        sql.Identifier(config.table),
    )
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
    except psycopg.OperationalError as err:
        raise ServiceUnavailableError(
            f"source {source.name!r}: cannot reach PostgreSQL: {err}"
        ) from None
    except psycopg.Error as err:
        raise TidegateError(f"source {source.name!r}: {err}") from None
    return _arrow_from_rows(names, rows)
