"""Reading and writing Parquet, CSV and JSON lines; every write replaces the file atomically.

The new content goes to a temporary file in the same directory, is flushed to disk,
and is renamed over the old file: a reader (or a crash) sees the old file or the new
one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tidegate.private import private_dir
from tidegate.timestamps import format_timestamp


def read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if fmt == "csv":
        import pyarrow.csv as pv

        return list(pv.read_csv(path).to_pylist())
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_rows(path: Path, fmt: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Atomically (temp file, fsync, rename); mkstemp makes the file 0600, the rename keeps it."""
    private_dir(path.parent)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        _write(Path(temp), fmt, rows, columns)
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _text(value: Any) -> Any:
    """A value for a text format: times as ISO 8601 in UTC (`timestamps.py`), the one
    format every output shares; JSON's default for the rest."""
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    return str(value)


def _write(path: Path, fmt: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=_text, separators=(",", ":")) + "\n")
        return
    import pyarrow as pa

    if fmt == "csv":  # Arrow would write `2026-01-01 10:00:00.000000Z`: one format instead
        rows = [
            {k: _text(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}
            for row in rows
        ]
    if rows:
        table = pa.Table.from_pylist(rows)
    else:
        table = pa.table({c: pa.array([], type=pa.string()) for c in columns})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pv

        pv.write_csv(table, path)
