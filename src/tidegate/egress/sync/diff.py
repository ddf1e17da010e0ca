"""The diff, in DuckDB: current mapped rows against the previous (key, hash) snapshot.

The current rows (a temporary table on the run's own cursor) and the previous snapshot
(Arrow, from the metadata store) are joined once; the changed rows stream out in Arrow
record batches, so a large product never becomes a list of Python dicts. Rows with a
null or duplicated destination key, and rows whose refusal was dismissed and that have
not changed since, are skipped and counted with their reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidegate.egress.sync.mapping import HASH, KEY, SOURCE_KEY, SUBJECT
from tidegate.meta.base import SyncedRow

CURRENT = "__tidegate_sync_current"
PREVIOUS = "__tidegate_sync_previous"
DISMISSED = "__tidegate_sync_dismissed"
PREV_MARK = "__in_previous"


@dataclass
class DiffCounts:
    current: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _state_table(keys: list[str], hashes: list[str]) -> Any:
    import pyarrow as pa

    return pa.table(
        {"key": pa.array(keys, type=pa.string()), "row_hash": pa.array(hashes, type=pa.string())}
    )


def _dismissed_table(dismissed: dict[str, str]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "key": pa.array(list(dismissed), type=pa.string()),
            "row_hash": pa.array(list(dismissed.values()), type=pa.string()),
        }
    )


class Diff:
    """One run's diff on one DuckDB cursor (the temporary table lives on that cursor)."""

    def __init__(self, cursor: Any, current_sql: str, relations: dict[str, Any]) -> None:
        self.cursor = cursor
        for name, table in relations.items():
            cursor.register(name, table)
        cursor.execute(f"CREATE OR REPLACE TEMP TABLE {CURRENT} AS {current_sql}")

    def current_keys(self) -> list[str]:
        rows = self.cursor.execute(f'SELECT "{KEY}" FROM {CURRENT} WHERE "{KEY}" IS NOT NULL')
        return [r[0] for r in rows.fetchall()]

    def compare(
        self,
        previous: tuple[list[str], list[str]],
        dismissed: dict[str, str],
        *,
        resend_all: bool,
    ) -> DiffCounts:
        """`previous`: (keys, row hashes) of what this sync wrote before."""
        self.cursor.register(PREVIOUS, _state_table(*previous))
        self.cursor.register(DISMISSED, _dismissed_table(dismissed))
        # the rows that may be sent: non-null key, key unique in this run
        self.cursor.execute(
            f"CREATE OR REPLACE TEMP VIEW __tidegate_sync_candidates AS "
            f'SELECT c.*, p.row_hash AS "__prev_hash", d.row_hash AS "__dismissed_hash" '
            f'FROM {CURRENT} c LEFT JOIN {PREVIOUS} p ON p.key = c."{KEY}" '
            f'LEFT JOIN {DISMISSED} d ON d.key = c."{KEY}" '
            f'WHERE c."{KEY}" IS NOT NULL AND c."{KEY}" NOT IN ('
            f'SELECT "{KEY}" FROM {CURRENT} WHERE "{KEY}" IS NOT NULL '
            f'GROUP BY "{KEY}" HAVING count(*) > 1)'
        )
        total, null_keys = self.cursor.execute(
            f'SELECT count(*), count(*) FILTER (WHERE "{KEY}" IS NULL) FROM {CURRENT}'
        ).fetchone()
        candidates, unchanged, dismissed_skips = self.cursor.execute(
            "SELECT count(*), "
            f'count(*) FILTER (WHERE "__prev_hash" = "{HASH}"), '
            f'count(*) FILTER (WHERE "__dismissed_hash" = "{HASH}" '
            f'AND "__prev_hash" IS DISTINCT FROM "{HASH}") '
            "FROM __tidegate_sync_candidates"
        ).fetchone()
        counts = DiffCounts(current=int(total), unchanged=0 if resend_all else int(unchanged))
        duplicates = int(total) - int(null_keys) - int(candidates)
        for reason, count in (
            ("null destination key", null_keys),
            ("destination key shared by several rows", duplicates),
            ("refused before and dismissed; unchanged since", dismissed_skips),
        ):
            if count:
                counts.skipped[reason] = int(count)
        self._resend_all = resend_all
        return counts

    def changed(self, batch_rows: int) -> Iterator[Any]:
        """Added and changed rows as Arrow tables of at most `batch_rows`, with a boolean
        `__in_previous` (changed rather than added) beside the bookkeeping columns."""
        # a full resend counts every row as added, as if nothing had been sent before
        condition = "TRUE" if self._resend_all else f'"__prev_hash" IS DISTINCT FROM "{HASH}"'
        seen = "FALSE" if self._resend_all else '"__prev_hash" IS NOT NULL'
        query = (
            f'SELECT * EXCLUDE ("__prev_hash", "__dismissed_hash"), '
            f'{seen} AS "{PREV_MARK}" FROM __tidegate_sync_candidates '
            f'WHERE {condition} AND "__dismissed_hash" IS DISTINCT FROM "{HASH}"'
        )
        reader = self.cursor.sql(query).to_arrow_reader(batch_rows)
        import pyarrow as pa

        pending: list[Any] = []
        size = 0
        for record_batch in reader:
            pending.append(record_batch)
            size += record_batch.num_rows
            while size >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending, size = rest.to_batches(), rest.num_rows
        if size:
            yield pa.Table.from_batches(pending)

    def removed(self) -> list[str]:
        """Keys of the previous snapshot that the current rows no longer hold."""
        gone = self.cursor.execute(
            f'SELECT p.key FROM {PREVIOUS} p ANTI JOIN {CURRENT} c ON c."{KEY}" = p.key'
        ).fetchall()
        return [r[0] for r in gone]


def state_rows(table: Any, written_at: float) -> list[SyncedRow]:
    """The state to record for rows of a sent batch."""
    keys = table.column(KEY).to_pylist()
    hashes = table.column(HASH).to_pylist()
    subjects = table.column(SUBJECT).to_pylist()
    sources = table.column(SOURCE_KEY).to_pylist()
    return [
        SyncedRow(k, h, s, src, written_at)
        for k, h, s, src in zip(keys, hashes, subjects, sources, strict=True)
    ]
