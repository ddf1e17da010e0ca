"""Tombstones: the only thing kept about an erased subject, and how it keeps them out.

A tombstone is `HMAC-SHA256(key, subject id)`, the key derived from the project's master
key (`secrets.py`) for this use only. It is not the clear id: without the key nobody can
tell whose it is, nor test a guess. With the key, tidegate can answer one question: "is
this subject erased?", which is what stops the subject coming back:

* the stream worker drops events of an erased subject (counted in its batch report as
  `erased`, never dead-lettered, so the payload is not stored anywhere);
* loading a source snapshot (`load_sources`) purges erased subjects from `raw.<source>`
  before any product is built from it (`purge_erased`), so a rebuild, and every sync
  and API read after it, cannot resurrect them;
* every build, scheduled rebuild, sync and micro-batch first calls `ensure_purged`:
  once per process and again whenever a new tombstone appears (another process may have
  written it, e.g. an erasure that found the warehouse held and ended `pending`), every
  raw table and live product version is purged of erased subjects, and their product
  keys leave the online store. So an erasure holds even when the sources still contain
  the subject and the erasure itself could not reach the warehouse.

`Tombstones` holds the set in memory and reads only tombstones newer than the last one
seen, once per `refresh()` (the worker refreshes per micro-batch); with no tombstone at
all, `is_erased` costs one set lookup and no hashing.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tidegate.errors import TidegateError
from tidegate.meta.base import MetadataStore

if TYPE_CHECKING:
    from tidegate.platform import Platform

TOMBSTONE_PREFIX = "erased:"


@runtime_checkable
class ErasureStore(Protocol):
    """What erasure needs of a metadata store (`meta/sql_erasure.py`)."""

    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool: ...

    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]: ...

    def erase_subject_rows(
        self,
        subject: str,
        pseudonym: str,
        digest: Any,
        values: Any = (),
        *,
        syncs: Any = None,
        consent: bool = True,
    ) -> dict[str, int]: ...

    def redact_audit(self, bodies: Any) -> int: ...

    def redact_runs(self, stats: Any) -> int: ...

    def runs_text(self) -> Any: ...

    def redact_observations(self, columns: Any, value: float) -> int: ...

    def erasing(self) -> Any: ...


def erasure_store(meta: MetadataStore) -> ErasureStore:
    if not isinstance(meta, ErasureStore):
        raise TidegateError(
            f"the metadata backend {type(meta).__name__} does not support erasure requests"
        )
    return meta


def tombstone_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"tidegate/erasure/tombstone", hashlib.sha256).digest()


def subject_hash(key: bytes, subject: object, subject_type: str | None = None) -> str:
    """The tombstone of `subject` (its id as text: 42 and "42" are the same subject).

    `subject_type` None is the project's default type, hashed as before types existed
    (so earlier tombstones keep holding); another type is part of the hashed text, so
    erasing customer 12 does not erase employee 12 (`project/subjects.py`)."""
    text = str(subject) if subject_type is None else f"{subject_type}\x1f{subject}"
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(key: bytes, subject: object, subject_type: str | None = None) -> str:
    """How erased records name the subject: `erased:<first 32 hex of the tombstone>`."""
    return TOMBSTONE_PREFIX + subject_hash(key, subject, subject_type)[:32]


class Tombstones:
    def __init__(
        self, meta: MetadataStore, master_key: bytes, default_type: str | None = None
    ) -> None:
        """`default_type`: the project's default subject type, whose tombstones are
        untyped hashes (`subject_hash`)."""
        self._store = erasure_store(meta)
        self.key = tombstone_key(master_key)
        self.default_type = default_type
        self._hashes: set[str] = set()
        self._seq = 0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            for seq, digest, _ in self._store.tombstones(self._seq):
                self._hashes.add(digest)
                self._seq = max(self._seq, seq)

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def seq(self) -> int:
        """The newest tombstone seen (0: none): what `ensure_purged` purged up to."""
        return self._seq

    def typed(self, subject_type: str | None) -> str | None:
        """The type as hashed: None for the default type."""
        return None if subject_type in (None, self.default_type) else subject_type

    def hash(self, subject: object, subject_type: str | None = None) -> str:
        return subject_hash(self.key, subject, self.typed(subject_type))

    def pseudonym(self, subject: object, subject_type: str | None = None) -> str:
        return pseudonym(self.key, subject, self.typed(subject_type))

    def is_erased(self, subject: object, subject_type: str | None = None) -> bool:
        """Whether `subject` (of `subject_type`, default: the project's default type) was
        erased, as of the last `refresh`; None is nobody."""
        if subject is None or not self._hashes:
            return False
        return self.hash(subject, subject_type) in self._hashes

    def erased_among(self, subjects: list[Any], subject_type: str | None = None) -> list[Any]:
        """The values of `subjects` (distinct values, any type) that were erased."""
        if not self._hashes:
            return []
        return [s for s in subjects if s is not None and self.hash(s, subject_type) in self._hashes]


def _tombstones(platform: Platform) -> Tombstones:
    from tidegate.project.subjects import default_subject_type

    return Tombstones(platform.meta, platform.master_key, default_subject_type(platform.project))


def tombstones_of(platform: Platform) -> Tombstones:
    """The platform's tombstone set (one per platform object), refreshed."""
    found = platform.component(_tombstones)
    found.refresh()
    return found


def is_erased(platform: Platform, subject: object) -> bool:
    return tombstones_of(platform).is_erased(subject)


class SourcedRow(Protocol):
    """What the filter reads of a validated event (`ingest.validate.Change`)."""

    @property
    def source(self) -> str: ...

    @property
    def row(self) -> Mapping[str, Any]: ...


class ErasedFilter:
    """The stream worker's check: is this validated event about an erased subject?"""

    def __init__(self, platform: Platform) -> None:
        from tidegate.project.project import stream_sources

        self._platform = platform
        sources = platform.project.sources
        self._subjects = {
            name: (config.subject, sources[name].subject_type)
            for name, config in stream_sources(platform.project).items()
        }
        self._tombstones: Tombstones | None = None

    def refresh(self) -> None:
        self._tombstones = tombstones_of(self._platform)

    def __call__(self, change: SourcedRow) -> bool:
        return self.about_erased(change.source, change.row)

    def none_erased(self) -> bool:
        """True while no subject is erased at all: a hot path may then skip the
        per-event check (a batch of 10k events costs one test instead of 10k)."""
        if self._tombstones is None:
            self.refresh()
        assert self._tombstones is not None
        return not len(self._tombstones)

    def subject_erased(self, subject: object) -> bool:
        """Whether `subject` (an id as any consent message or event names it) is erased."""
        if self._tombstones is None:
            self.refresh()
        assert self._tombstones is not None
        return self._tombstones.is_erased(subject)  # consent messages: the default type

    def about_erased(self, source: str, row: Any) -> bool:
        """Whether `row` (an event, valid or not, as a JSON object) names an erased
        subject in `source`'s subject field."""
        if self._tombstones is None:
            self.refresh()
        assert self._tombstones is not None
        column, subject_type = self._subjects.get(source, (None, None))
        if column is None or not isinstance(row, Mapping):
            return False
        return self._tombstones.is_erased(row.get(column), subject_type)


def purge_erased(platform: Platform, source: str) -> int:
    """Delete erased subjects' rows from `raw.<source>` (after a snapshot load); returns
    how many rows went. Nothing to do (and no query) while there is no tombstone."""
    tombstones = tombstones_of(platform)
    config = platform.project.sources[source].config
    subject_type = platform.project.sources[source].subject_type
    column = getattr(config, "subject", None)
    if not len(tombstones) or column is None:
        return 0
    quoted = '"' + column.replace('"', '""') + '"'
    relation = f'raw."{source}"'
    with platform.warehouse.cursor() as cur:
        distinct = cur.execute(
            f"SELECT DISTINCT CAST({quoted} AS VARCHAR) FROM {relation} WHERE {quoted} IS NOT NULL"
        ).fetchall()
        erased = tombstones.erased_among([row[0] for row in distinct], subject_type)
    if not erased:
        return 0
    return platform.warehouse.delete_subjects("raw", source, column, erased)


def without_erased_sql(platform: Platform, source: str, select_sql: str) -> str:
    """`select_sql` (a source snapshot about to be loaded) minus the rows of erased
    subjects, so they are never written into the DuckDB file at all: a row deleted after
    the load would leave its bytes in the file. One read of the subject column of the
    source; the SQL unchanged while there is no tombstone."""
    tombstones = tombstones_of(platform)
    column = getattr(platform.project.sources[source].config, "subject", None)
    subject_type = platform.project.sources[source].subject_type
    if not len(tombstones) or column is None:
        return select_sql
    quoted = '"' + column.replace('"', '""') + '"'
    with platform.warehouse.cursor() as cur:
        erased = _subject_erased_values(
            cur, tombstones, f"({select_sql}) AS incoming", column, subject_type
        )
    if not erased:
        return select_sql
    values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in erased)
    return (
        f"SELECT * FROM ({select_sql}) AS incoming"
        f" WHERE {quoted} IS NULL OR CAST({quoted} AS VARCHAR) NOT IN ({values})"
    )


def without_erased_arrow(platform: Platform, source: str, table: Any) -> Any:
    """A pyarrow table of a source snapshot minus the rows of erased subjects."""
    tombstones = tombstones_of(platform)
    column = getattr(platform.project.sources[source].config, "subject", None)
    subject_type = platform.project.sources[source].subject_type
    if not len(tombstones) or column is None or column not in table.column_names:
        return table
    import pyarrow as pa

    values = [None if v is None else str(v) for v in table.column(column).to_pylist()]
    erased = set(
        tombstones.erased_among(sorted({v for v in values if v is not None}), subject_type)
    )
    if not erased:
        return table
    return table.filter(pa.array([v is None or v not in erased for v in values]))


def _subject_erased_values(
    cur: Any, tombstones: Tombstones, relation: str, column: str, subject_type: str | None = None
) -> list[Any]:
    quoted = '"' + column.replace('"', '""') + '"'
    distinct = cur.execute(
        f"SELECT DISTINCT CAST({quoted} AS VARCHAR) FROM {relation} WHERE {quoted} IS NOT NULL"
    ).fetchall()
    return tombstones.erased_among([row[0] for row in distinct], subject_type)


def purge_live_product(platform: Platform, product: str) -> int:
    """Delete erased subjects' rows from the live version of `product`, and their keys
    from the online store; returns how many rows went."""
    tombstones = tombstones_of(platform)
    spec = platform.project.products[product]
    column = spec.subject_column
    version = platform.meta.live_version(product)
    if not len(tombstones) or column is None or version is None:
        return 0
    relation = f'builds."{version.table}"'
    if not platform.warehouse.has_relation("builds", version.table):
        return 0
    quoted = '"' + column.replace('"', '""') + '"'
    key = '"' + spec.config.key.replace('"', '""') + '"'
    gone: list[str] = []
    with platform.warehouse.cursor() as cur:
        erased = _subject_erased_values(cur, tombstones, relation, column, spec.subject_type)
        for value in erased:
            where = f"WHERE CAST({quoted} AS VARCHAR) = ?"
            rows = cur.execute(
                f"SELECT CAST({key} AS VARCHAR) FROM {relation} {where}", [value]
            ).fetchall()
            gone += [str(r[0]) for r in rows]
    if erased:
        platform.warehouse.delete_subjects("builds", version.table, column, erased)
    if gone:
        platform.online.delete(product, gone)
    return len(gone)


def ensure_purged(platform: Platform) -> int:
    """Purge erased subjects from every raw table and live product version, once per
    process and again after each new tombstone; returns how many rows went. Costs one
    dictionary lookup while nothing new was erased."""
    tombstones = tombstones_of(platform)
    if not len(tombstones) or platform.__dict__.get("_tidegate_purged_seq") == tombstones.seq:
        return 0
    removed = 0
    for name, source in platform.project.sources.items():
        column = getattr(source.config, "subject", None)
        if column is not None and platform.warehouse.has_relation("raw", name):
            removed += purge_erased(platform, name)
    for product in platform.project.products:
        removed += purge_live_product(platform, product)
    platform.__dict__["_tidegate_purged_seq"] = tombstones.seq
    return removed
