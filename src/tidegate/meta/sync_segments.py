"""Sync state as Arrow segments: what each sync wrote, one compressed segment per checkpoint.

A sync's state (destination key, row hash, subject, source key, when written) is what
the diff compares against and where erasure looks for a subject. Written one SQL row
per destination row it costs several microseconds a row (b-tree inserts for the key,
subject and source-key indexes): more than PostgreSQL's COPY spends on the row itself.
So each checkpoint appends one *segment*: an Arrow IPC stream (zstd) of the batch's
state rows, or of the keys it deleted (a tombstone). Appending a segment costs about
as much as writing its bytes; the checkpoint stays one metadata transaction.

Reading folds the segments oldest to newest. A segment flagged `fresh` holds only keys
the state did not hold when it was written (the diff said so: rows added, not
changed), so it is simply appended; any other segment first removes its keys from
what came before. An initial load (all fresh) is read back with no work at all; an
incremental run costs one `is_in` filter per changed segment. Compaction rewrites a
sync's segments as one when they pile up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.meta.base import SyncedRow

STATE_COLUMNS = ("key", "row_hash", "subject", "source_key", "written_at")
ROWS, GONE = "rows", "gone"


def state_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("row_hash", pa.string()),
            ("subject", pa.string()),
            ("source_key", pa.string()),
            ("written_at", pa.float64()),
        ]
    )


def empty_state() -> Any:
    return state_schema().empty_table()


def rows_table(rows: Sequence[SyncedRow], written_at: float) -> Any:
    """State rows given as Python objects, as an Arrow table."""
    import pyarrow as pa

    return pa.table(
        {
            "key": pa.array([r.key for r in rows], pa.string()),
            "row_hash": pa.array([r.row_hash for r in rows], pa.string()),
            "subject": pa.array([r.subject for r in rows], pa.string()),
            "source_key": pa.array([r.source_key for r in rows], pa.string()),
            "written_at": pa.array([r.written_at or written_at for r in rows], pa.float64()),
        },
        schema=state_schema(),
    )


def conform(table: Any, written_at: float) -> Any:
    """An Arrow table of state rows (at least key and row_hash) in the state schema."""
    import pyarrow as pa

    n = table.num_rows
    columns = []
    for field in state_schema():
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.name == "written_at":
            columns.append(pa.nulls(n, pa.float64()).fill_null(written_at))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=state_schema())


def encode(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode(body: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(body)).read_all()


@dataclass(frozen=True)
class Segment:
    seq: int
    kind: str  # ROWS or GONE
    fresh: bool  # ROWS only: none of its keys were in the state before it
    table: Any  # ROWS: the state schema; GONE: a `key` column


def _matching(table: Any, keys: Any, source_keys: Any) -> Any:
    """Rows whose key is in `keys` or whose source key is in `source_keys` (None: all)."""
    import pyarrow.compute as pc

    if keys is None and source_keys is None:
        return table
    mask = None
    if keys is not None:
        mask = pc.is_in(table.column("key"), value_set=keys)
    if source_keys is not None and "source_key" in table.column_names:
        by_source = pc.is_in(table.column("source_key"), value_set=source_keys)
        mask = by_source if mask is None else pc.or_(mask, by_source)
    return table.filter(mask) if mask is not None else table.slice(0, 0)


def fold(
    segments: Sequence[Segment],
    keys: Sequence[str] | None = None,
    source_keys: Sequence[str] | None = None,
) -> Any:
    """The state the segments add up to (oldest first), optionally only the rows whose
    key is in `keys` or whose source key is in `source_keys`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = None if keys is None else pa.array(list(keys), pa.string())
    wanted_sources = None if source_keys is None else pa.array(list(source_keys), pa.string())
    if wanted is not None and wanted_sources is None:
        wanted_sources = pa.array([], pa.string())
    if wanted_sources is not None and wanted is None:
        wanted = pa.array([], pa.string())
    parts: list[Any] = []
    for segment in segments:
        if segment.kind == GONE or not segment.fresh:
            overwritten = segment.table.column("key").combine_chunks()
            parts = [
                kept
                for part in parts
                if (
                    kept := part.filter(pc.invert(pc.is_in(part.column("key"), overwritten)))
                ).num_rows
            ]
        if segment.kind == ROWS:
            rows = _matching(segment.table, wanted, wanted_sources)
            if rows.num_rows:
                parts.append(rows)
    if not parts:
        return empty_state()
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def to_synced_rows(table: Any) -> list[SyncedRow]:
    columns = [table.column(name).to_pylist() for name in STATE_COLUMNS]
    return [SyncedRow(*values) for values in zip(*columns, strict=True)]
