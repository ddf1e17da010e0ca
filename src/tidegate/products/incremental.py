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

from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from tidegate.project.project import Product, Project
from tidegate.store.warehouse import BUILDS, Warehouse

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

    Old and new rows are compared in DuckDB (a row equal to the one it replaces is no
    change), so only the rows that changed are turned into Python, for publishing; four
    statements per product and batch, a fixed cost every micro-batch pays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = product.config.key
    quoted_key = _quote(key)
    db.register(KEYS_RELATION, keys)
    try:
        new = db.sql(sql).to_arrow_table()
        old = db.sql(  # the rows replaced, read out by the statement that deletes them
            f"DELETE FROM {table} WHERE {quoted_key} IN (SELECT {quoted_key} FROM"
            f" {KEYS_RELATION}) RETURNING *"
        ).to_arrow_table()
    finally:
        db.unregister(KEYS_RELATION)
    if old.num_rows:
        old = old.cast(new.schema)
    delta = ProductDelta(product.name)
    db.register(PRODUCT_ROWS, new)
    try:
        if new.num_rows:
            db.execute(f"INSERT INTO {table} SELECT * FROM {PRODUCT_ROWS}")
        if not old.num_rows:
            delta.upserts = new.to_pylist()
        else:
            db.register(OLD_ROWS, old)
            try:
                # EXCEPT compares whole rows, NULLs equal: what is new or not the same
                changed = db.sql(
                    f"SELECT * FROM (SELECT * FROM {PRODUCT_ROWS} EXCEPT ALL"
                    f" SELECT * FROM {OLD_ROWS}) ORDER BY {quoted_key}"
                ).to_arrow_table()
            finally:
                db.unregister(OLD_ROWS)
            delta.upserts = changed.to_pylist()
            # keys whose row is gone (NULL matches NULL, as in the comparison above)
            kept = pc.is_in(old.column(key), value_set=new.column(key), skip_nulls=False)
            delta.deletes = old.column(key).filter(pc.invert(kept)).to_pylist()
    finally:
        db.unregister(PRODUCT_ROWS)
    delta.touched = pa.concat_tables([old, new]) if old.num_rows else new
    return delta


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
    parts: list[str] = []
    registered: list[str] = []
    try:
        for index, (relation, column) in enumerate(sorted(key_columns.items())):
            rows = touched.get(relation)
            if rows is None or rows.num_rows == 0 or column not in rows.column_names:
                continue
            name = f"{TOUCHED_PREFIX}{index}"
            db.register(name, rows)
            registered.append(name)
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
    finally:
        for name in registered:
            db.unregister(name)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
