"""How each product is kept fresh: incremental, batch or static, and why.

The declared `freshness` says how stale a product may be; the SQL's shape says what
keeping it that fresh costs:

* **static**: nothing it reads is a stream; it changes when `tidegate build` runs.
* **incremental**: it reads streams, each entity's row depends only on rows the
  planner can find from a change (every relation it reads has a column for its key,
  and the SQL has none of the shapes `products/shapes.py` names), and its freshness is
  tight (at most `INCREMENTAL_UP_TO`): each micro-batch recomputes the changed keys
  only: those of the new rows, of the old versions of updated and deleted rows, and of
  rows grouped with them by a non-key column (a closure).
* **batch**: the SQL ties entities together (a global max, a rank over everyone, top-N,
  a join off the key, random() or the clock), or the freshness is loose enough that a
  rebuild every `freshness` is cheaper than per-event work. The scheduler rebuilds it
  when due and something upstream changed; `tidegate explain` names the shape.

SQL that reads the clock (`now()`, `current_date`, …) has time windows that slide
without any new event, so it is also re-evaluated every `freshness`, events or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import sqlglot

from tidegate.products.incremental import key_column
from tidegate.products.shapes import analyse, reads_clock
from tidegate.project.project import Project, is_stream

Mode = Literal["incremental", "batch", "static"]
#: beyond this freshness a periodic rebuild is cheaper than per-event recomputation
INCREMENTAL_UP_TO = 3600.0


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
    #: relation -> column sets whose shared values tie rows of different keys (see shapes)
    closures: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

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
            if dep in project.sources and is_stream(project.sources[dep].config):
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
    time_window = reads_clock(tree)
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
    blockers: list[str] = []
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
    relations = set(project.sources) | set(project.products)
    shape = analyse(tree, product.config.key, set(mapping.values()), relations)
    blockers += shape.blockers
    clock = () if any(b.startswith("reads the clock") for b in blockers) else clock
    if blockers:
        return ProductPlan(name, "batch", freshness, (*blockers, *clock), streams, {}, time_window)
    if not project.config.backends.store.incremental:
        reason = (
            f"store {project.config.backends.store.type!r} keeps immutable versions: a "
            "rebuild every freshness period, not a per-event recompute"
        )
        return ProductPlan(name, "batch", freshness, (reason, *clock), streams, {}, time_window)
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
    closures = {r: tuple(sorted(sets)) for r, sets in sorted(shape.closures.items())}
    also = tuple(
        f"a change in {r!r} also recomputes the {product.config.key!r} of every {r} row "
        f"sharing its {', '.join(columns)} (grouped by it)"
        for r, sets in closures.items()
        for columns in sets
    )
    return ProductPlan(
        name,
        "incremental",
        freshness,
        (reason, *also, *clock),
        streams,
        mapping,
        time_window,
        closures,
    )


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def explain(project: Project) -> str:
    return "\n".join(plan.explain() for plan in plan_project(project).values())
