"""How each product is kept fresh: incremental, batch or static, and why.

The declared `freshness` says how stale a product may be; the SQL's shape says what
keeping it that fresh costs:

* **static**: nothing it reads is a stream; it changes when `tidegate build` runs.
* **incremental**: it reads streams, each entity's row depends only on that entity's
  rows (every relation it reads has a column for its key; no aggregate over all rows,
  no window over the whole result, no top-level LIMIT), and its freshness is tight
  (at most `INCREMENTAL_UP_TO`): each micro-batch recomputes the changed keys only.
* **batch**: the SQL ties entities together (a global max, a rank over everyone), or
  the freshness is loose enough that a rebuild every `freshness` is cheaper than
  per-event work. The scheduler rebuilds it when due and something upstream changed.

SQL that reads the clock (`now()`, `current_date`, …) has time windows that slide
without any new event, so it is also re-evaluated every `freshness`, events or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import sqlglot
from sqlglot import exp

from tidegate.products.incremental import key_column
from tidegate.project.project import Project

Mode = Literal["incremental", "batch", "static"]
#: beyond this freshness a periodic rebuild is cheaper than per-event recomputation
INCREMENTAL_UP_TO = 3600.0
_CLOCK = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime)
_CLOCK_NAMES = {"NOW", "GET_CURRENT_TIMESTAMP", "TODAY", "CURRENT_LOCALTIMESTAMP"}


@dataclass(frozen=True)
class ProductPlan:
    product: str
    mode: Mode
    freshness: float  # seconds
    reasons: tuple[str, ...]
    streams: frozenset[str] = frozenset()
    #: relation -> its column holding this product's key (incremental products)
    key_columns: dict[str, str] = field(default_factory=dict)
    time_window: bool = False

    @property
    def reevaluate_every(self) -> float | None:
        """Seconds between scheduled rebuilds (None: never scheduled)."""
        if self.mode == "batch" or self.time_window:
            return self.freshness
        return None

    def explain(self) -> str:
        lines = [f"{self.product}: {self.mode} (freshness {_human(self.freshness)})"]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.reevaluate_every is not None:
            lines.append(f"  - re-evaluated every {_human(self.reevaluate_every)} by a rebuild")
        return "\n".join(lines)


def plan_project(project: Project) -> dict[str, ProductPlan]:
    plans: dict[str, ProductPlan] = {}
    streams_of: dict[str, frozenset[str]] = {}
    for name in project.build_order():
        product = project.products[name]
        streams: set[str] = set()
        for dep in product.depends_on:
            if dep in project.sources and project.sources[dep].config.type == "stream":
                streams.add(dep)
            elif dep in streams_of:
                streams |= streams_of[dep]
        streams_of[name] = frozenset(streams)
        plans[name] = _plan(project, name, frozenset(streams))
    return plans


def _plan(project: Project, name: str, streams: frozenset[str]) -> ProductPlan:
    product = project.products[name]
    freshness = project.freshness_seconds(name)
    tree = sqlglot.parse_one(product.sql, dialect="duckdb")
    time_window = _reads_clock(tree)
    clock = ("reads the clock: time windows slide without events",) if time_window else ()
    if not streams:
        return ProductPlan(
            name,
            "static",
            freshness,
            ("reads no stream source: changes when `tidegate build` runs", *clock),
            streams,
            time_window=time_window,
        )
    blockers = _shape_blockers(tree)
    mapping: dict[str, str] = {}
    for relation in sorted(product.depends_on):
        column = key_column(project, product, relation)
        if column is None:
            blockers.append(
                f"cannot tell which {product.config.key!r} a change in {relation!r} touches "
                f"(it has no {product.config.key!r} column)"
            )
        else:
            mapping[relation] = column
    if blockers:
        return ProductPlan(name, "batch", freshness, (*blockers, *clock), streams, {}, time_window)
    if freshness > INCREMENTAL_UP_TO:
        reason = (
            f"freshness {_human(freshness)} allows periodic rebuilds, cheaper than "
            "per-event recomputation"
        )
        return ProductPlan(name, "batch", freshness, (reason, *clock), streams, {}, time_window)
    reason = (
        f"each micro-batch of {', '.join(sorted(streams))} recomputes only the changed "
        f"{product.config.key!r} values (" + ", ".join(f"{r}.{c}" for r, c in mapping.items()) + ")"
    )
    return ProductPlan(
        name, "incremental", freshness, (reason, *clock), streams, mapping, time_window
    )


def _shape_blockers(tree: exp.Expr) -> list[str]:
    blockers: list[str] = []
    for select in tree.find_all(exp.Select):
        if select.args.get("group"):
            continue
        for projection in select.expressions:
            for agg in projection.find_all(exp.AggFunc):
                if (
                    agg.find_ancestor(exp.Window) is None
                    and agg.find_ancestor(exp.Select) is select
                ):
                    scope = _scope_name(select)
                    blockers.append(
                        f"{agg.sql(dialect='duckdb')} aggregates over all rows{scope}: "
                        "one change can move every entity"
                    )
    for window in tree.find_all(exp.Window):
        if not window.args.get("partition_by"):
            blockers.append(
                f"{window.sql(dialect='duckdb')} is a window over the whole result: "
                "one change can move every entity"
            )
    if isinstance(tree, exp.Query) and tree.args.get("limit"):
        blockers.append("a top-level LIMIT picks rows by comparing all entities")
    return blockers


def _scope_name(select: exp.Select) -> str:
    cte = select.find_ancestor(exp.CTE)
    return f" (in {cte.alias_or_name!r})" if cte is not None else ""


def _reads_clock(tree: exp.Expr) -> bool:
    if any(True for _ in tree.find_all(*_CLOCK)):
        return True
    return any(f.name.upper() in _CLOCK_NAMES for f in tree.find_all(exp.Anonymous, exp.Func))


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def explain(project: Project) -> str:
    return "\n".join(plan.explain() for plan in plan_project(project).values())
