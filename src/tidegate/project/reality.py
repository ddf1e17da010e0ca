"""Checks against what is really there: source files and tables, and check targets.

`validate` should fail on whatever `build` would fail on, with the file and line to edit:
a source file that does not exist, a declared column the file or table does not have
(build would stop with DuckDB's "BinderException"), values that do not cast to the
declared type, and a relationship check pointing at a product or column that does not
exist. Only local files are opened (a file source, a SQLite table); remote databases
are left to `build`, so `validate` never needs the network.
"""

from __future__ import annotations

import difflib
import sqlite3
from pathlib import Path
from typing import Any

from tidegate.errors import Problem
from tidegate.project.models import FileSource, SqliteTableSource
from tidegate.project.project import Project, Source

#: rows read to check that values cast to the declared types (a sample: validate stays fast)
SAMPLE_ROWS = 10_000


def check_reality(project: Project) -> list[Problem]:
    """Problems with the local source files and tables (the loader already ran the rest)."""
    problems: list[Problem] = []
    for source in project.sources.values():
        config = source.config
        if isinstance(config, FileSource):
            problems += _check_file_source(project, source, config)
        elif isinstance(config, SqliteTableSource):
            problems += _check_sqlite_source(project, source, config)
    return problems


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _missing_columns(source: Source, actual: list[str], where: str) -> list[Problem]:
    lowered = {a.lower() for a in actual}
    return [
        source.doc.problem(
            ("columns", column),
            f"declared column {column!r} is not in {where} "
            f"(it has: {', '.join(actual)}){_closest(column, actual)}",
        )
        for column in source.columns
        if column.lower() not in lowered  # DuckDB matches identifiers case-insensitively
    ]


def _check_file_source(project: Project, source: Source, config: FileSource) -> list[Problem]:
    path = project.path(config.path)
    if not path.is_file():
        return [source.doc.problem(("path",), f"file {config.path!r} not found ({path})")]
    import duckdb

    reader = _reader(path, config.resolved_format())
    if reader is None:
        return [source.doc.problem(("path",), "cannot tell the file format; set `format:`")]
    with duckdb.connect() as db:
        try:
            described = db.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
        except duckdb.Error as err:
            message = str(err).split("\n")[0]
            return [source.doc.problem(("path",), f"cannot read {config.path!r}: {message}")]
        actual = [str(row[0]) for row in described]
        problems = _missing_columns(source, actual, f"file {config.path!r}")
        if problems:
            return problems
        for column, spec in source.columns.items():
            quoted = '"' + column.replace('"', '""') + '"'
            query = (
                f"SELECT {quoted}::VARCHAR FROM (SELECT * FROM {reader} LIMIT {SAMPLE_ROWS}) "
                f"WHERE {quoted} IS NOT NULL AND TRY_CAST({quoted} AS {spec.type}) IS NULL LIMIT 1"
            )
            try:
                bad = db.execute(query).fetchone()
            except duckdb.Error as err:
                message = str(err).split("\n")[0]
                bad = None
                problems.append(
                    source.doc.problem(
                        ("columns", column, "type"),
                        f"column {column!r} cannot be read as {spec.type}: {message}",
                    )
                )
            if bad is not None:
                problems.append(
                    source.doc.problem(
                        ("columns", column, "type"),
                        f"column {column!r} is declared {spec.type}, but the file has values "
                        f"that are not: {bad[0]!r}",
                    )
                )
    return problems


def _reader(path: Path, file_format: str) -> str | None:
    """The DuckDB table function that reads the file as `build` does (store/sources.py)."""
    literal = str(path).replace("'", "''")
    return {
        "parquet": f"read_parquet('{literal}')",
        "csv": f"read_csv('{literal}', header = true, all_varchar = true)",
        "json": f"read_json_auto('{literal}')",
    }.get(file_format)


def _check_sqlite_source(
    project: Project, source: Source, config: SqliteTableSource
) -> list[Problem]:
    path = project.path(config.path)
    if not path.is_file():
        return [source.doc.problem(("path",), f"SQLite file {config.path!r} not found ({path})")]
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
            if config.table not in tables:
                return [
                    source.doc.problem(
                        ("table",),
                        f"table {config.table!r} is not in {config.path!r} "
                        f"(it has: {', '.join(sorted(tables)) or 'no tables'})"
                        f"{_closest(config.table, tables)}",
                    )
                ]
            quoted = '"' + config.table.replace('"', '""') + '"'
            actual = [str(r[1]) for r in db.execute(f"PRAGMA table_info({quoted})")]
    except sqlite3.Error as err:
        return [source.doc.problem(("path",), f"cannot read SQLite file {config.path!r}: {err}")]
    return _missing_columns(source, actual, f"table {config.table!r}")


def check_relationships(project: Project) -> list[Problem]:
    """Each relationship check names an existing product or source, and a column of it."""
    from tidegate.project.observe_config import (
        CHECK_ADAPTER,
        RelationshipCheck,
        expand_column_check,
    )

    problems: list[Problem] = []
    relations: dict[str, list[str]] = {
        **{name: list(s.columns) for name, s in project.sources.items()},
        **{name: list(p.columns) for name, p in project.products.items()},
    }
    for product in project.products.values():
        located: list[tuple[tuple[Any, ...], Any]] = [
            (("checks", i), check) for i, check in enumerate(product.config.checks)
        ]
        for column, spec in product.config.columns.items():
            for j, item in enumerate(spec.checks):
                check = CHECK_ADAPTER.validate_python(expand_column_check(column, item))
                located.append((("columns", column, "checks", j), check))
        for loc, check in located:
            if not isinstance(check, RelationshipCheck):
                continue
            if check.to not in relations:
                known = sorted(relations)
                problems.append(
                    product.doc.problem(
                        loc,
                        f"relationship check {check.check_name!r} points at {check.to!r}, "
                        f"which is not a product or source (known: {', '.join(known)})"
                        f"{_closest(check.to, known)}",
                    )
                )
            elif check.target_field not in relations[check.to]:
                columns = relations[check.to]
                problems.append(
                    product.doc.problem(
                        loc,
                        f"relationship check {check.check_name!r}: {check.to!r} has no column "
                        f"{check.target_field!r} (it has: {', '.join(columns)})"
                        f"{_closest(check.target_field, columns)}",
                    )
                )
    return problems
