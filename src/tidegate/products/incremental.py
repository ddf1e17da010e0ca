"""Recompute only the entities that changed: the product's own SQL, restricted to keys.

For a product P with key `k`, the changed keys are turned into an Arrow relation and
P's SQL (tables qualified as in a build) becomes the subquery of

    SELECT CAST(q.c AS type) AS c, ... FROM (<P's SQL>) AS q
    WHERE q.k IN (SELECT k FROM <changed keys>)

built as a SQLGlot tree; the keys are data, never pasted into SQL text. The live
version table then has those keys' rows deleted and the recomputed rows inserted, in
the caller's transaction, and the caller learns which rows really changed (a key whose
row came out the same is not a change).

Which keys a change touches (`changed_keys`, one DuckDB query): a changed row of a
relation R touches the entities whose key is in R's column of the same name as P's key
(or R's subject column when P's key is its subject), in the row's new version and in
its old one (an update, a key move, a delete: the raw apply hands both over). Where
P's SQL groups R's rows by a non-key column (the latest event per ticket, counted per
agent), the keys of every R row sharing that column's values with a changed row are
recomputed too. The planner only makes a product incremental when every relation it
reads has such a column and the SQL has no other cross-entity dependency
(`products/shapes.py`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from tidegate.project.project import Product, Project
from tidegate.store.warehouse import BUILDS, Warehouse, registered

KEYS_RELATION = "__tidegate_changed_keys"
PRODUCT_ROWS = "__tidegate_product_rows"


@dataclass
class ProductDelta:
    """What one micro-batch did to one product."""

    product: str
    upserts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[Any] = field(default_factory=list)
    touched: Any = None  # Arrow table of old and new rows of the recomputed keys

    @property
    def changed(self) -> int:
        return len(self.upserts) + len(self.deletes)


def key_column(project: Project, product: Product, relation: str) -> str | None:
    """The column of `relation` (a source or product) that holds `product`'s key, if any."""
    key = product.config.key
    if relation in project.sources:
        source = project.sources[relation].config
        columns = source.columns
        subject = getattr(source, "subject", None)
    else:
        upstream = project.products[relation].config
        columns = upstream.columns
        subject = upstream.subject
    if key in columns:
        return key
    if product.config.subject == key and subject:
        return str(subject)
    return None


def restricted_sql(warehouse: Warehouse, product: Product, project: Project) -> str:
    """The product's SQL restricted to the keys in `KEYS_RELATION`, cast to the contract."""
    body = sqlglot.parse_one(warehouse.qualify_sql(product, project), dialect="duckdb")
    assert isinstance(body, exp.Query)
    key = product.config.key
    casts = [
        exp.cast(exp.column(name, table="q", quoted=True), spec.type, dialect="duckdb").as_(
            name, quoted=True
        )
        for name, spec in product.columns.items()
    ]
    keys = exp.select(exp.column(key, quoted=True)).from_(KEYS_RELATION)
    query = (
        exp.select(*casts)
        .from_(body.subquery("q"))
        .where(exp.column(key, table="q", quoted=True).isin(query=keys))
    )
    return query.sql(dialect="duckdb")


def live_table(version_table: str) -> str:
    return f'{BUILDS}."{version_table}"'


OLD_ROWS = "__tidegate_old_rows"


def recompute(db: Any, sql: str, table: str, product: Product, keys: Any) -> ProductDelta:
    """Replace the rows of `keys` (a one-column Arrow table) in `table` with `sql`'s.

    Old and new rows are compared (a row equal to the one it replaces is no change): in
    Python for a small batch, where DuckDB's fixed cost per statement dominates, in
    DuckDB for a large one, so that only the rows that changed are turned into Python,
    for publishing."""
    import pyarrow as pa

    key = product.config.key
    quoted_key = _quote(key)
    with registered(db, KEYS_RELATION, keys):
        new = db.sql(sql).to_arrow_table()
        old = db.sql(  # the rows replaced, read out by the statement that deletes them
            f"DELETE FROM {table} WHERE {quoted_key} IN (SELECT {quoted_key} FROM"
            f" {KEYS_RELATION}) RETURNING *"
        ).to_arrow_table()
    if old.num_rows:
        old = old.cast(new.schema)
    delta = ProductDelta(product.name)
    with registered(db, PRODUCT_ROWS, new):
        if new.num_rows:
            db.execute(f"INSERT INTO {table} SELECT * FROM {PRODUCT_ROWS}")
        if not old.num_rows:
            delta.upserts = new.to_pylist()
        else:
            small = _compare_small(old, new, key)
            if small is None:
                small = compare_in_duckdb(db, old, new, key)
            delta.upserts, delta.deletes = small
    delta.touched = pa.concat_tables([old, new]) if old.num_rows else new
    return delta


NEW_ROWS = "__tidegate_new_rows"


def compare_in_duckdb(
    db: Any, old: Any, new: Any, key: str
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The new rows not equal to an old one (EXCEPT compares whole rows, NULLs equal), in
    key order, and the keys whose row is gone (NULL matches NULL, as in the EXCEPT)."""
    import pyarrow.compute as pc

    with registered(db, NEW_ROWS, new), registered(db, OLD_ROWS, old):
        changed = db.sql(
            f"SELECT * FROM (SELECT * FROM {NEW_ROWS} EXCEPT ALL"
            f" SELECT * FROM {OLD_ROWS}) ORDER BY {_quote(key)}"
        ).to_arrow_table()
    kept = pc.is_in(old.column(key), value_set=new.column(key), skip_nulls=False)
    return changed.to_pylist(), old.column(key).filter(pc.invert(kept)).to_pylist()


#: up to this many old and new rows, compared in Python: registering the old rows and
#: an EXCEPT query cost several ms whatever the size, the fixed cost of a small (fresh)
#: micro-batch; beyond it, DuckDB compares faster than rows turned into Python
SMALL_COMPARE = 2_000


def _compare_small(old: Any, new: Any, key: str) -> tuple[list[dict[str, Any]], list[Any]] | None:
    """What `compare_in_duckdb` finds, in Python, for a small batch: the
    new rows not equal to the old row of their key (NULLs, and NaNs, equal as in
    DuckDB), in key order, and the keys whose row is gone. None (DuckDB decides) for a
    large batch, or when a key is not one hashable value held by one row."""
    if old.num_rows + new.num_rows > SMALL_COMPARE:
        return None
    try:
        before = {row[key]: row for row in old.to_pylist()}
        after = new.to_pylist()
        kept = {row[key] for row in after}
        if len(before) != old.num_rows or len(kept) != new.num_rows:
            return None
        changed = [row for row in after if not _same_row(before.get(row[key]), row)]
        changed.sort(key=lambda row: _order(row[key]))
    except TypeError:  # unhashable or unorderable keys
        return None
    return changed, [k for k in before if k not in kept]


def _same_row(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return False
    for name, value in new.items():
        other = old.get(name)
        if value != other and not (value is not None and value != value and other != other):
            return False  # unequal, and not both NaN
    return True


def _order(value: Any) -> tuple[bool, Any]:
    """ORDER BY's order: NULLs last."""
    return (value is None, value)


TOUCHED_PREFIX = "__tidegate_touched_"


def changed_keys(
    db: Any,
    product: Product,
    key_columns: dict[str, str],
    closures: dict[str, tuple[tuple[str, ...], ...]],
    touched: dict[str, Any],
    relation_sql: dict[str, str],
) -> Any:
    """The distinct keys of `product` to recompute, as a one-column Arrow table (None when
    the batch touched nothing it reads), found in DuckDB, not row by row.

    `touched`: relation -> Arrow table of its rows a batch changed (old and new
    versions); `relation_sql`: relation -> its qualified name (`raw."orders"`)."""
    key = product.config.key
    key_type = product.columns[key].type
    simple = _keys_in_arrow(key, key_type, key_columns, closures, touched)
    if simple is not _NOT_SIMPLE:
        return simple
    parts: list[str] = []
    with ExitStack() as relations:
        for index, (relation, column) in enumerate(sorted(key_columns.items())):
            rows = touched.get(relation)
            if rows is None or rows.num_rows == 0 or column not in rows.column_names:
                continue
            name = f"{TOUCHED_PREFIX}{index}"
            relations.enter_context(registered(db, name, rows))
            parts.append(f"SELECT TRY_CAST({_quote(column)} AS {key_type}) AS k FROM {name}")
            for columns in closures.get(relation, ()):
                if not set(columns) <= set(rows.column_names):
                    continue
                same = " AND ".join(
                    f"t.{_quote(c)} IS NOT DISTINCT FROM r.{_quote(c)}" for c in columns
                )
                parts.append(
                    f"SELECT TRY_CAST(r.{_quote(column)} AS {key_type}) AS k"
                    f" FROM {relation_sql[relation]} AS r"
                    f" WHERE EXISTS (SELECT 1 FROM {name} AS t WHERE {same})"
                )
        if not parts:
            return None
        union = " UNION ALL ".join(parts)
        return db.sql(
            f"SELECT DISTINCT k AS {_quote(key)} FROM ({union}) WHERE k IS NOT NULL ORDER BY 1"
        ).to_arrow_table()


_NOT_SIMPLE: Any = object()


def _keys_in_arrow(
    key: str,
    key_type: str,
    key_columns: dict[str, str],
    closures: dict[str, tuple[tuple[str, ...], ...]],
    touched: dict[str, Any],
) -> Any:
    """`changed_keys` without DuckDB for the common case: no relation the batch touched
    has a closure (so the keys are the touched rows' key columns and nothing else), and
    each of those columns already has the key's Arrow type (so `TRY_CAST` is the
    identity). The same distinct, sorted, non-null keys, without the register, query
    and unregister (several ms of fixed cost on every micro-batch); `_NOT_SIMPLE`
    otherwise."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = _ARROW_KEYS.get(key_type.upper().split("(")[0].strip())
    if wanted is None:
        return _NOT_SIMPLE
    chunks: list[Any] = []
    for relation, column in sorted(key_columns.items()):
        rows = touched.get(relation)
        if rows is None or rows.num_rows == 0 or column not in rows.column_names:
            continue
        if closures.get(relation):
            return _NOT_SIMPLE
        values = rows.column(column)
        if str(values.type) != wanted:
            return _NOT_SIMPLE
        chunks += values.chunks
    if not chunks:
        return None
    keys = pc.unique(pa.chunked_array(chunks).drop_null())
    return pa.table({key: keys.take(pc.sort_indices(keys))})


#: key column types whose Arrow type (as text) is known without asking DuckDB
_ARROW_KEYS = {
    "BIGINT": "int64",
    "INT8": "int64",
    "LONG": "int64",
    "VARCHAR": "string",
    "TEXT": "string",
    "STRING": "string",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
