"""Which SQL shapes a key-scoped recompute keeps equal to a batch rebuild, and which not.

Recomputing only the keys a micro-batch touched is right when every row of the product
depends on the rows of one key only, or on rows we can find from the changed ones. The
walk below looks at every SELECT of the product's SQL and names what breaks that:

* an aggregate with no GROUP BY, or a window with no PARTITION BY: one change moves
  every entity (a total, a rank over everyone);
* LIMIT / OFFSET / FETCH / TABLESAMPLE anywhere: top-N across keys, or a sample;
* non-deterministic functions (random(), uuid(), the clock: now(), current_date, ...):
  each recomputed key would see its own value, so no rebuild could equal the result;
* a JOIN whose condition does not equate the key columns of both sides;
* a key column computed from something other than a key column (`x + 1 AS key`,
  `other_id AS key`): then a changed row's key column does not say which entity moved;
* a GROUP BY, PARTITION BY or DISTINCT ON without the key, unless it groups the rows of
  one source or product read directly by plain columns: then a change also recomputes
  the keys of every row sharing those columns' values with a changed row (old or new),
  a *closure* the worker finds in DuckDB. That is the "latest event per ticket, counted
  per agent" shape: moving a ticket recomputes the agent it left as well.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlglot import exp

_CLOCK = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime)
_CLOCK_NAMES = {"NOW", "GET_CURRENT_TIMESTAMP", "TODAY", "CURRENT_LOCALTIMESTAMP"}
_RANDOM = (exp.Rand, exp.Randn, exp.Uuid)
_RANDOM_NAMES = {"RANDOM", "UUID", "GEN_RANDOM_UUID", "UUIDV4", "UUIDV7", "SETSEED", "NEXTVAL"}
#: wrappers through which a key column stays the key column
_KEEPS_KEY = (exp.Cast, exp.TryCast, exp.Paren, exp.ArgMax, exp.ArgMin, exp.AnyValue, exp.First,
              exp.Last, exp.Max, exp.Min)  # fmt: skip


@dataclass
class Shape:
    """What the walk found: reasons to stay batch, and closures for incremental upkeep."""

    blockers: list[str] = field(default_factory=list)
    #: relation -> the column sets whose shared values tie rows of different keys
    closures: dict[str, set[tuple[str, ...]]] = field(default_factory=lambda: defaultdict(set))


def reads_clock(tree: exp.Expr) -> bool:
    if any(True for _ in tree.find_all(*_CLOCK)):
        return True
    return any(f.name.upper() in _CLOCK_NAMES for f in tree.find_all(exp.Anonymous, exp.Func))


def analyse(tree: exp.Expr, key: str, key_names: set[str], relations: set[str]) -> Shape:
    """Walk `tree` for a product keyed by `key`; `key_names`: the key's column names in the
    relations it reads; `relations`: the sources and products (not CTEs) it may read."""
    shape = Shape()
    names = {key, *key_names}
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    _nondeterministic(tree, shape)
    for node in tree.find_all(exp.Limit, exp.Offset, exp.Fetch, exp.TableSample):
        shape.blockers.append(
            f"{node.sql(dialect='duckdb').strip()} picks rows by comparing all entities "
            "(top-N or a sample across keys)"
        )
    for select in tree.find_all(exp.Select):
        scope = _scope_name(select)
        _aggregates(select, scope, shape)
        group = select.args.get("group")
        if group is not None:
            # GROUP BY ALL groups by every plain projection; GROUP BY 2 names the second
            grouped = (
                [_unalias(e) for e in select.expressions if not _aggregates_in(e)]
                if group.args.get("all")
                else [_positional(select, e) for e in group.expressions]
            )
            if not _has_key(grouped, names):
                _closure(select, grouped, "GROUP BY", key, relations - ctes, shape)
        distinct = select.args.get("distinct")
        if isinstance(distinct, exp.Distinct):
            on = distinct.args.get("on")
            if on is not None:
                if not _has_key(on.expressions, names):
                    _closure(select, on.expressions, "DISTINCT ON", key, relations - ctes, shape)
            elif not _has_key(select.expressions, names):
                shape.blockers.append(
                    f"SELECT DISTINCT without {key!r}{scope} merges rows of different keys"
                )
        for window in select.find_all(exp.Window):
            if window.find_ancestor(exp.Select) is not select:
                continue
            partition = window.args.get("partition_by") or []
            if not partition:
                shape.blockers.append(
                    f"{window.sql(dialect='duckdb')} is a window over the whole result{scope}: "
                    "one change can move every entity"
                )
            elif not _has_key(partition, names):
                what = f"{window.sql(dialect='duckdb')} (PARTITION BY without {key!r})"
                _closure(select, partition, what, key, relations - ctes, shape)
        _joins(select, names, key, shape)
        _key_projections(select, names, key, shape)
    return shape


def _nondeterministic(tree: exp.Expr, shape: Shape) -> None:
    found = {f.sql(dialect="duckdb") for f in tree.find_all(*_RANDOM)}
    found |= {
        f.sql(dialect="duckdb")
        for f in tree.find_all(exp.Anonymous, exp.Func)
        if f.name.upper() in _RANDOM_NAMES
    }
    if found:
        shape.blockers.append(
            f"non-deterministic {', '.join(sorted(found))}: each recompute draws new values, "
            "so no rebuild would give the same rows"
        )
    if reads_clock(tree):
        clocks = {f.sql(dialect="duckdb") for f in tree.find_all(*_CLOCK)}
        clocks |= {
            f.sql(dialect="duckdb")
            for f in tree.find_all(exp.Anonymous, exp.Func)
            if f.name.upper() in _CLOCK_NAMES
        }
        shape.blockers.append(
            f"reads the clock ({', '.join(sorted(clocks))}): keys recomputed at different "
            "times would not equal one rebuild, and time windows slide without events"
        )


def _aggregates(select: exp.Select, scope: str, shape: Shape) -> None:
    if select.args.get("group"):
        return
    for projection in select.expressions:
        for agg in projection.find_all(exp.AggFunc):
            if agg.find_ancestor(exp.Window) is None and agg.find_ancestor(exp.Select) is select:
                shape.blockers.append(
                    f"{agg.sql(dialect='duckdb')} aggregates over all rows{scope}: "
                    "one change can move every entity"
                )


def _unalias(node: exp.Expr) -> exp.Expr:
    return node.this if isinstance(node, exp.Alias) else node


def _aggregates_in(node: exp.Expr) -> bool:
    return any(True for _ in node.find_all(exp.AggFunc, exp.Window))


def _positional(select: exp.Select, node: exp.Expr) -> exp.Expr:
    """`GROUP BY 2` means the second projection."""
    if isinstance(node, exp.Literal) and not node.is_string and node.name.isdigit():
        index = int(node.name) - 1
        if 0 <= index < len(select.expressions):
            return _unalias(select.expressions[index])
    return node


def _has_key(expressions: list[exp.Expr], names: set[str]) -> bool:
    return any(isinstance(e, exp.Column) and e.name in names for e in expressions)


def _closure(
    select: exp.Select,
    columns: list[exp.Expr],
    what: str,
    key: str,
    relations: set[str],
    shape: Shape,
) -> None:
    source = select.args.get("from_") or select.args.get("from")
    table = source.this if source is not None else None
    plain = bool(columns) and all(isinstance(c, exp.Column) for c in columns)
    if (
        isinstance(table, exp.Table)
        and table.name in relations
        and not select.args.get("joins")
        and plain
    ):
        shape.closures[table.name].add(tuple(c.name for c in columns))
        return
    listed = ", ".join(c.sql(dialect="duckdb") for c in columns)
    shape.blockers.append(
        f"{what} groups rows of different {key!r} values by {listed}{_scope_name(select)}, "
        "and not over one source read directly by plain columns: a change can move "
        "entities the planner cannot find"
    )


def _joins(select: exp.Select, names: set[str], key: str, shape: Shape) -> None:
    for join in select.args.get("joins") or []:
        using = join.args.get("using") or []
        if any(ident.name in names for ident in using):
            continue
        on = join.args.get("on")
        if on is not None and any(
            isinstance(eq.left, exp.Column)
            and isinstance(eq.right, exp.Column)
            and eq.left.name in names
            and eq.right.name in names
            for eq in on.find_all(exp.EQ)
        ):
            continue
        condition = f" ON {on.sql(dialect='duckdb')}" if on is not None else ""
        shape.blockers.append(
            f"JOIN {join.this.sql(dialect='duckdb')}{condition}{_scope_name(select)} does not "
            f"match {key!r} on both sides: a change on one side can move rows of other keys"
        )


def _key_projections(select: exp.Select, names: set[str], key: str, shape: Shape) -> None:
    for projection in select.expressions:
        aliased = isinstance(projection, exp.Alias) and projection.alias in names
        if aliased and not _keeps_key(projection.this, names):
            shape.blockers.append(
                f"{projection.sql(dialect='duckdb')}{_scope_name(select)} computes the key "
                "from other columns: a changed row does not say which entity it moves"
            )


def _keeps_key(node: exp.Expr, names: set[str]) -> bool:
    if isinstance(node, exp.Column):
        return node.name in names
    if isinstance(node, exp.Coalesce):
        return all(_keeps_key(e, names) for e in (node.this, *node.expressions))
    if isinstance(node, _KEEPS_KEY):
        return _keeps_key(node.this, names)
    return False


def _scope_name(select: exp.Select) -> str:
    cte = select.find_ancestor(exp.CTE)
    return f" (in {cte.alias_or_name!r})" if cte is not None else ""
