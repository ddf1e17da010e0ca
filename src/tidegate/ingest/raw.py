"""Stream sources in DuckDB: `raw.<source>`, fed by Arrow batches, never row by row.

* A `json` source is an append-only history of events. With an `event_id` column the
  table has that column as primary key and an event seen twice is kept once.
* A `debezium` (CDC) source mirrors the operational table: its `key` is the primary
  key, creates and updates upsert, deletes delete, a truncate empties it, tombstones
  change nothing. Several changes of one row in a batch collapse to the last one (the
  log keeps one row's changes in order); a column Debezium could not capture (its
  `__debezium_unavailable_value` placeholder, an unchanged TOASTed value) keeps the value
  it had.

`apply_changes` runs inside the caller's transaction and returns the rows it touched,
before and after, which is how the worker knows which entities changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidegate.ingest.validate import Change, arrow_type
from tidegate.project.models import StreamSource
from tidegate.store.warehouse import RAW, registered

BATCH_RELATION = "__tidegate_events"


def raw_table(source: str) -> str:
    return f'{RAW}."{source}"'


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def primary_key(config: StreamSource) -> str | None:
    return config.key if config.format == "debezium" else config.event_id


def ensure_stream_table(db: Any, config: StreamSource) -> int:
    """Create `raw.<source>` if missing; return its row count."""
    columns = [f"{_quote(name)} {spec.type}" for name, spec in config.columns.items()]
    key = primary_key(config)
    if key is not None:
        columns.append(f"PRIMARY KEY ({_quote(key)})")
    db.execute(f"CREATE TABLE IF NOT EXISTS {raw_table(config.name)} ({', '.join(columns)})")
    rows = db.execute(f"SELECT count(*) FROM {raw_table(config.name)}").fetchall()
    return int(rows[0][0])


def arrow_rows(config: StreamSource, rows: Sequence[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([(n, arrow_type(s.type)) for n, s in config.columns.items()])
    return pa.Table.from_pylist(list(rows), schema=schema)


def apply_changes(db: Any, config: StreamSource, changes: Sequence[Change]) -> Any:
    """Apply `changes` to `raw.<source>`; return an Arrow table of every row touched
    (new rows, and the old version of rows updated, deleted or truncated)."""
    if config.format != "debezium":
        return apply_arrow(db, config, arrow_rows(config, [c.row for c in changes]))
    select = ", ".join(
        f"CAST({_quote(n)} AS {s.type}) AS {_quote(n)}" for n, s in config.columns.items()
    )
    return _apply_cdc(db, config, changes, select)


def apply_arrow(db: Any, config: StreamSource, batch: Any) -> Any:
    """Append a `json` source's events from an Arrow table (the source's columns, in
    log order), in one DuckDB statement; return the rows appended (the touched rows).

    With an `event_id` the first event of each id in the batch is the one kept (a later
    duplicate in the batch, or an id already stored, is ignored): the table is only
    rewritten on the rare batch that holds a duplicate id."""
    import pyarrow.compute as pc

    table = raw_table(config.name)
    key = config.event_id
    rows = batch.num_rows
    if key is not None and rows > 1 and pc.count_distinct(batch[key], mode="all").as_py() < rows:
        seen: set[Any] = set()
        first = []
        for index, value in enumerate(batch.column(key).to_pylist()):
            if value not in seen:
                seen.add(value)
                first.append(index)
        batch = batch.take(first)
    select = ", ".join(
        f"CAST({_quote(n)} AS {s.type}) AS {_quote(n)}" for n, s in config.columns.items()
    )
    verb = "INSERT OR IGNORE" if key is not None else "INSERT"
    with registered(db, BATCH_RELATION, batch):
        db.execute(f"{verb} INTO {table} SELECT {select} FROM {BATCH_RELATION}")
    return batch


UNCHANGED = "__tidegate_unchanged"
OLD_RELATION = "__tidegate_old"


def _collapse(changes: Sequence[Change]) -> tuple[bool, dict[Any, Change]]:
    """(whether the batch truncates the table, the last change of each key after the
    last truncate). A placeholder column of a later upsert takes the value of an earlier
    upsert of the same row in the batch, so only what no change of the batch says is
    left to take from the stored row."""
    truncated = False
    last: dict[Any, Change] = {}
    for change in changes:
        if change.op == "truncate":
            truncated = True
            last.clear()
            continue
        if change.op not in ("upsert", "delete"):
            continue  # tombstones: the delete before each did the work
        before = last.pop(change.key, None)  # insertion order = order of the last change
        if change.op == "upsert" and change.unchanged and before is not None:
            row = dict(change.row)
            if before.op == "upsert":
                for name in change.unchanged:
                    row[name] = before.row.get(name)
                unchanged = tuple(n for n in change.unchanged if n in before.unchanged)
            else:  # deleted earlier in the batch: nothing stored to keep
                unchanged = ()
            change = Change(change.source, "upsert", row, change.key, change.ts, unchanged)
        elif change.op == "upsert" and change.unchanged and truncated:
            change = Change(change.source, "upsert", change.row, change.key, change.ts)
        last[change.key] = change
    return truncated, last


def _apply_cdc(db: Any, config: StreamSource, changes: Sequence[Change], select: str) -> Any:
    """Mirror a CDC batch into `raw.<source>`, set-based: the old versions of the touched
    rows are read out (and returned, so their keys are recomputed too), the rows deleted,
    and the surviving rows inserted, with placeholder columns keeping the old value."""
    import pyarrow as pa

    table = raw_table(config.name)
    names = list(config.columns)
    columns = ", ".join(_quote(n) for n in names)
    key = config.key
    assert key is not None
    truncated, last = _collapse(changes)
    if truncated:
        old = db.sql(f"SELECT {columns} FROM {table}").to_arrow_table()
        db.execute(f"DELETE FROM {table}")
    keys = arrow_rows(config, [{key: k} for k in last]).select([key])
    with registered(db, BATCH_RELATION, keys):
        found = db.sql(
            f"SELECT {columns} FROM {table}"
            f" WHERE {_quote(key)} IN (SELECT {_quote(key)} FROM {BATCH_RELATION})"
        ).to_arrow_table()
        db.execute(
            f"DELETE FROM {table} WHERE {_quote(key)} IN"
            f" (SELECT {_quote(key)} FROM {BATCH_RELATION})"
        )
    upserts = [c for c in last.values() if c.op == "upsert"]
    batch = arrow_rows(config, [c.row for c in upserts])
    if upserts:
        batch = batch.append_column(
            UNCHANGED, pa.array([list(c.unchanged) for c in upserts], pa.list_(pa.string()))
        )
        merged = ", ".join(
            f"CASE WHEN list_contains(b.{UNCHANGED}, {_literal(n)}) THEN o.{_quote(n)}"
            f" ELSE CAST(b.{_quote(n)} AS {spec.type}) END AS {_quote(n)}"
            for n, spec in config.columns.items()
        )
        with registered(db, BATCH_RELATION, batch), registered(db, OLD_RELATION, found):
            batch = db.sql(
                f"SELECT {merged} FROM {BATCH_RELATION} AS b LEFT JOIN {OLD_RELATION} AS o"
                f" ON o.{_quote(key)} = b.{_quote(key)}"
            ).to_arrow_table()
        with registered(db, BATCH_RELATION, batch):
            db.execute(f"INSERT INTO {table} SELECT {select} FROM {BATCH_RELATION}")
    # Every touched key was deleted above; the rows whose last change is not a delete are
    # inserted again, so deletes need nothing more.
    touched = [found] if not truncated else [old]
    return pa.concat_tables([t.cast(batch.schema) for t in touched] + [batch])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
