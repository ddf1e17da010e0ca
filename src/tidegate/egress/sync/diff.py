"""The diff, in DuckDB: current mapped rows against the previous (key, hash) snapshot.

Three paths, one result (tests/egress/test_sync_diff_paths.py holds them equal):

* a first sync (no state, nothing dismissed) has nothing to join: its rows stream
  straight from the guarded query, their hashes computed while earlier batches are
  sent, the first batch small so the destination starts early (`_rebatched`);
* otherwise, when the destination keys are non-null and unique (known from the mapping,
  `unique_keys`, or counted in one pass over the keys), one full outer join of the
  guarded rows with the state (Arrow, from the metadata store) keeps only the rows whose
  hash differs, as Arrow (`_one_pass`): the counts, the rows to send and the removed
  rows come from it, and the unchanged rows are only counted;
* rows with a null or shared destination key, a partial run, or a full resend use a
  temporary table of the current rows on the run's own cursor (`_compare_materialized`).

The rows to send leave in Arrow batches, so a large product never becomes a list of
Python dicts, and the state of a sent batch is taken from its Arrow columns
(`state_table`). Rows with a null or duplicated destination key, and rows whose refusal
was dismissed and that have not changed since, are skipped and counted with their reason.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidegate.egress.sync.mapping import HASH, KEY, SOURCE_KEY, SUBJECT
from tidegate.meta.base import SyncedRow
from tidegate.meta.subject_sets import ArrowSubjects

CURRENT = "__tidegate_sync_current"
PREVIOUS = "__tidegate_sync_previous"
DISMISSED = "__tidegate_sync_dismissed"
DUPLICATES = "__tidegate_sync_duplicates"
CANDIDATES = "__tidegate_sync_candidates"
DIFFERING = "__tidegate_sync_differing"
# the previous state and the dismissed hash beside a differing row (see `_one_pass`)
P_KEY, P_HASH, P_SUBJECT = "__tidegate_prev_key", "__tidegate_prev_hash", "__tidegate_prev_subject"
P_SOURCE_KEY, P_WRITTEN_AT = "__tidegate_prev_source_key", "__tidegate_prev_written_at"
D_HASH = "__tidegate_dismissed_hash"
DIFF_COLUMNS = (P_KEY, P_HASH, P_SUBJECT, P_SOURCE_KEY, P_WRITTEN_AT, D_HASH)
PREV_MARK = "__in_previous"
FIRST_BATCH_ROWS = 16_384  # the first batch of a first sync (see `_rebatched`)


@dataclass
class DiffCounts:
    current: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


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

    def __init__(
        self,
        cursor: Any,
        current_sql: str,
        relations: dict[str, Any],
        *,
        unique_keys: bool = False,
    ) -> None:
        """`unique_keys`: the caller knows every current row has a key, none shared
        (`mapping.key_is_unique`); otherwise the diff counts them to find out."""
        self.cursor = cursor
        self.unique_keys = unique_keys
        self._previous_rows = 0
        self._dismissed_rows = 0
        self.resend_all = False
        self.candidates = 0  # rows that may be sent: non-null key, unique in this run
        for name, table in relations.items():
            cursor.register(name, table)
        self._current_sql = current_sql
        self._materialized = False
        self._streamed = False  # a first sync: rows stream from the query (see `compare`)
        self._differing: Any = None  # the rows `_one_pass` found differ, when it ran

    def _materialize(self) -> None:
        if not self._materialized:
            self.cursor.execute(f"CREATE OR REPLACE TEMP TABLE {CURRENT} AS {self._current_sql}")
            self._materialized = True

    def current_keys(self) -> list[str]:
        self._materialize()
        rows = self.cursor.execute(f'SELECT "{KEY}" FROM {CURRENT} WHERE "{KEY}" IS NOT NULL')
        return [r[0] for r in rows.fetchall()]

    def _first_sync(self) -> DiffCounts | None:
        """Counts of a sync with no state to diff against, when every key is non-null and
        unique (one pass over the keys only); None otherwise (then rows are skipped with
        their reasons, from the materialized rows)."""
        if self.unique_keys:
            total = self.cursor.execute(f"SELECT count(*) FROM ({self._current_sql})").fetchall()[
                0
            ][0]
        else:
            total, keyed, distinct = self._key_counts()
            if not (total == keyed == distinct):
                return None
        self._streamed = True
        self.candidates = int(total)
        return DiffCounts(current=int(total))

    def compare(self, previous: Any, dismissed: dict[str, str], *, resend_all: bool) -> DiffCounts:
        """`previous`: the state table (key, row_hash, subject, source_key, written_at) of
        what this sync wrote before, or the part of it the run looks at."""
        self.resend_all = resend_all
        if not self._materialized and not previous.num_rows and not dismissed:
            first = self._first_sync()
            if first is not None:
                return first
        self.cursor.register(PREVIOUS, previous)
        self.cursor.register(DISMISSED, _dismissed_table(dismissed))
        self._previous_rows = int(previous.num_rows)
        self._dismissed_rows = len(dismissed)
        if not self._materialized and not resend_all:  # a full resend streams (below)
            counts = self._one_pass()
            if counts is not None:
                return counts
        return self._compare_materialized()

    def _one_pass(self) -> DiffCounts | None:
        """The diff in one pass over the guarded rows, when their keys are non-null and
        unique (None otherwise: then `_compare_materialized` skips rows with reasons).

        One full outer join of the current rows with the state keeps only the rows
        whose hash differs (added, changed, removed; with the previous state beside
        them), as Arrow: for a small change a few rows, from which the counts, the rows
        to send and the removed rows are read. The unchanged rows are counted, never
        copied; no temporary table of every current row is built (that alone costs more
        than the join), and the rows to send are not read a second time."""
        total = None
        if not self.unique_keys:
            total, keyed, distinct = self._key_counts()
            if not (total == keyed == distinct):
                return None
        # no dismissed refusals (the usual case): no join with them at all
        dismissed = "CAST(NULL AS VARCHAR)" if not self._dismissed_rows else "d.row_hash"
        join_dismissed = (
            f' LEFT JOIN {DISMISSED} d ON d.key = c."{KEY}"' if self._dismissed_rows else ""
        )
        differing = self.cursor.sql(
            f'SELECT c.*, p.key AS "{P_KEY}", p.row_hash AS "{P_HASH}", '
            f'p.subject AS "{P_SUBJECT}", p.source_key AS "{P_SOURCE_KEY}", '
            f'p.written_at AS "{P_WRITTEN_AT}", {dismissed} AS "{D_HASH}" '
            f"FROM ({self._current_sql}) c FULL OUTER JOIN {PREVIOUS} p "
            f'ON p.key = c."{KEY}"{join_dismissed} '
            f'WHERE c."{HASH}" IS DISTINCT FROM p.row_hash'
        ).to_arrow_table()
        self.cursor.register(DIFFERING, differing)
        current = len(differing) - differing.column(HASH).null_count
        held = len(differing) - differing.column(P_KEY).null_count
        dismissed_skips = 0
        if self._dismissed_rows:
            dismissed_skips = self.cursor.execute(
                f'SELECT count(*) FROM {DIFFERING} WHERE "{D_HASH}" = "{HASH}"'
            ).fetchall()[0][0]
        if total is None:
            # keys unique on both sides: each state row is either an unchanged current
            # row or a differing row (changed or removed), so the rest are unchanged
            total = self._previous_rows - int(held) + int(current)
        self._differing = differing
        self.candidates = int(total) - int(dismissed_skips)
        counts = DiffCounts(current=int(total), unchanged=int(total) - int(current))
        if dismissed_skips:
            counts.skipped["refused before and dismissed; unchanged since"] = int(dismissed_skips)
        return counts

    def _key_counts(self) -> tuple[int, int, int]:
        """Rows, rows with a key, distinct keys of the current rows (one pass over the
        keys only: DuckDB leaves the other columns and the hash uncomputed)."""
        total, keyed, distinct = self.cursor.execute(
            f'SELECT count(*), count("{KEY}"), count(DISTINCT "{KEY}") FROM ({self._current_sql})'
        ).fetchall()[0]
        return int(total), int(keyed), int(distinct)

    def _compare_materialized(self) -> DiffCounts:
        """The diff over a temporary table of the current rows: rows with a null or
        shared destination key are skipped and counted with their reason."""
        self._materialize()
        self.cursor.execute(
            f'CREATE OR REPLACE TEMP TABLE {DUPLICATES} AS SELECT "{KEY}" AS key FROM {CURRENT} '
            f'WHERE "{KEY}" IS NOT NULL GROUP BY "{KEY}" HAVING count(*) > 1'
        )
        # the rows that may be sent: non-null key, key unique in this run
        self.cursor.execute(
            f"CREATE OR REPLACE TEMP VIEW {CANDIDATES} AS "
            f'SELECT c.*, p.row_hash AS "__prev_hash", d.row_hash AS "__dismissed_hash" '
            f'FROM {CURRENT} c LEFT JOIN {PREVIOUS} p ON p.key = c."{KEY}" '
            f'LEFT JOIN {DISMISSED} d ON d.key = c."{KEY}" '
            f'WHERE c."{KEY}" IS NOT NULL AND c."{KEY}" NOT IN (SELECT key FROM {DUPLICATES})'
        )
        total, null_keys = self.cursor.execute(
            f'SELECT count(*), count(*) FILTER (WHERE "{KEY}" IS NULL) FROM {CURRENT}'
        ).fetchall()[0]
        candidates, unchanged, dismissed_skips = self.cursor.execute(
            "SELECT count(*), "
            f'count(*) FILTER (WHERE "__prev_hash" = "{HASH}"), '
            f'count(*) FILTER (WHERE "__dismissed_hash" = "{HASH}" '
            f'AND "__prev_hash" IS DISTINCT FROM "{HASH}") '
            f"FROM {CANDIDATES}"
        ).fetchall()[0]
        self.candidates = int(candidates) - int(dismissed_skips)
        counts = DiffCounts(current=int(total), unchanged=0 if self.resend_all else int(unchanged))
        duplicates = int(total) - int(null_keys) - int(candidates)
        for reason, count in (
            ("null destination key", null_keys),
            ("destination key shared by several rows", duplicates),
            ("refused before and dismissed; unchanged since", dismissed_skips),
        ):
            if count:
                counts.skipped[reason] = int(count)
        return counts

    def first_batch_rows(self, batch_rows: int) -> int:
        """How many rows the first batch of `changed` holds at most."""
        return min(batch_rows, FIRST_BATCH_ROWS) if self._streamed else batch_rows

    def changed(self, batch_rows: int) -> Iterator[Any]:
        """Added and changed rows as Arrow tables of at most `batch_rows`, with a boolean
        `__in_previous` (changed rather than added) beside the bookkeeping columns."""

        if self._streamed:  # nothing sent before: every row is added
            query = f'SELECT *, FALSE AS "{PREV_MARK}" FROM ({self._current_sql})'
            first = self.first_batch_rows(batch_rows)
            yield from _rebatched(self.cursor.sql(query), batch_rows, first=first)
            return
        if self._differing is not None:  # `_one_pass` holds the rows to send
            excluded = ", ".join(f'"{c}"' for c in DIFF_COLUMNS)
            query = (
                f"SELECT * EXCLUDE ({excluded}), "
                f'"{P_HASH}" IS NOT NULL AS "{PREV_MARK}" FROM {DIFFERING} '
                f'WHERE "{HASH}" IS NOT NULL AND "{D_HASH}" IS DISTINCT FROM "{HASH}"'
            )
            yield from _rebatched(self.cursor.sql(query), batch_rows)
            return
        # a full resend counts every row as added, as if nothing had been sent before
        condition = "TRUE" if self.resend_all else f'"__prev_hash" IS DISTINCT FROM "{HASH}"'
        seen = "FALSE" if self.resend_all else '"__prev_hash" IS NOT NULL'
        query = (
            f'SELECT * EXCLUDE ("__prev_hash", "__dismissed_hash"), '
            f'{seen} AS "{PREV_MARK}" FROM {CANDIDATES} '
            f'WHERE {condition} AND "__dismissed_hash" IS DISTINCT FROM "{HASH}"'
        )
        yield from _rebatched(self.cursor.sql(query), batch_rows)

    def removed(self) -> list[SyncedRow]:
        """State rows of the previous snapshot whose key the current rows no longer hold."""
        if self._streamed:  # there was no previous snapshot
            return []
        if self._differing is not None:
            gone = self.cursor.execute(
                f'SELECT "{P_KEY}", "{P_HASH}", "{P_SUBJECT}", "{P_SOURCE_KEY}", '
                f'"{P_WRITTEN_AT}" FROM {DIFFERING} WHERE "{HASH}" IS NULL ORDER BY 1'
            ).fetchall()
            return [SyncedRow(*row) for row in gone]
        gone = self.cursor.execute(
            "SELECT p.key, p.row_hash, p.subject, p.source_key, p.written_at "
            f'FROM {PREVIOUS} p ANTI JOIN {CURRENT} c ON c."{KEY}" = p.key ORDER BY p.key'
        ).fetchall()
        return [SyncedRow(*row) for row in gone]


def _rebatched(relation: Any, batch_rows: int, *, first: int | None = None) -> Iterator[Any]:
    """A DuckDB relation's rows as Arrow tables of `batch_rows` (the last one shorter);
    the first one of `first` rows when given: it leaves sooner, so the destination loads
    it while DuckDB computes the rest (`Prefetch`) instead of waiting for a whole batch."""
    import pyarrow as pa

    wanted = first or batch_rows
    reader = relation.to_arrow_reader(min(wanted, 1 << 17))
    pending: list[Any] = []
    size = 0
    for record_batch in reader:
        pending.append(record_batch)
        size += record_batch.num_rows
        while size >= wanted:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, wanted)
            rest = table.slice(wanted)
            pending, size = rest.to_batches(), rest.num_rows
            wanted = batch_rows
    if size:
        yield pa.Table.from_batches(pending)


def state_table(table: Any) -> Any:
    """The state to record for rows of a sent batch, from its Arrow columns (the metadata
    store adds when they were written)."""
    return table.select([KEY, HASH, SUBJECT, SOURCE_KEY]).rename_columns(
        ["key", "row_hash", "subject", "source_key"]
    )


class SubjectTally:
    """The distinct subjects of the rows a run sent, and the first few of them in order.

    `one_per_row`: each product row has its own subject (the subject column is the
    product key, unique in a published version), so counting rows counts subjects and
    no de-duplication is needed; otherwise each batch's distinct subjects are
    de-duplicated across batches at the end. Either way every subject is kept (Arrow
    chunks, a few bytes each) for the audit trail's full list (`everyone`)."""

    def __init__(self, one_per_row: bool = False, sample: int = 100) -> None:
        self.one_per_row = one_per_row
        self.sample = sample
        self._count = 0
        self._chunks: list[Any] = []
        self._first: list[str] = []

    def add(self, subjects: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        present = subjects.drop_null()
        if not len(present):
            return
        distinct = present if self.one_per_row else pc.unique(present)
        self._count += len(distinct)
        # arrays, not chunked arrays: `pa.chunked_array` would take a chunked array for
        # a Python iterable and convert it value by value (ten times `to_pylist`)
        if isinstance(distinct, pa.ChunkedArray):
            self._chunks.extend(distinct.chunks)
        else:
            self._chunks.append(distinct)
        first = distinct.take(pc.bottom_k_unstable(distinct, k=min(self.sample, len(distinct))))
        self._first = sorted(set(self._first) | {str(s) for s in first.to_pylist()})[: self.sample]

    def summary(self) -> tuple[int, list[str]]:
        """How many distinct subjects, and the first `sample` of them in order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.one_per_row or len(self._chunks) <= 1:
            return self._count, self._first
        merged = pc.unique(pa.chunked_array(self._chunks, type=self._chunks[0].type))
        return len(merged), self._first

    def everyone(self) -> tuple[str, ...]:
        """Every distinct subject sent, as text (what `audit_subjects` keeps)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self._chunks:
            return ()
        merged = pa.chunked_array(self._chunks, type=self._chunks[0].type)
        if not self.one_per_row and len(self._chunks) > 1:
            merged = pc.unique(merged)
        text = pc.cast(merged, pa.string()).combine_chunks()
        return ArrowSubjects(text, distinct=True)  # the audit store takes the array as is


class Prefetch:
    """Iterate `source` in a thread, up to `depth` items ahead: the next batch leaves
    DuckDB (which releases the GIL) while the current one is being sent. `close` stops
    and joins the thread, so the cursor it reads is free again; errors of the source
    are raised to the consumer."""

    _DONE = object()

    def __init__(self, source: Iterator[Any], depth: int = 1) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="sync-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any, error: BaseException | None = None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((item, error), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            self._put(None, err)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
